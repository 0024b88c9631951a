//! `shared/vectors/slack.json`, beside the repository or at `MEMBERSPOT_VECTORS_DIR`.

use std::path::PathBuf;

use serde_json::Value;

fn vectors_dir() -> PathBuf {
    let dir = match std::env::var_os("MEMBERSPOT_VECTORS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"),
    };
    assert!(
        dir.is_dir(),
        "test vectors not found at {} — put shared/ beside the repository or set MEMBERSPOT_VECTORS_DIR",
        dir.display()
    );
    dir
}

pub fn load(file: &str) -> Value {
    let path = vectors_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}
