//! Links `memberspot` with packed relative relocations (DT_RELR) where the C library
//! understands them.
//!
//! A position-independent binary of this size carries about 90,000 relative relocations:
//! 2.1 MB of `.rela.dyn` that the loader reads on every start and that stays resident. As
//! DT_RELR they take 30 KB. The binary then needs glibc 2.36, which the loader checks
//! (`GLIBC_ABI_DT_RELR`), so it is only done when the glibc being linked against is that
//! new; `MEMBERSPOT_LINK_RELR=0` turns it off, e.g. to build for an older machine.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MEMBERSPOT_LINK_RELR");
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let wanted = env("MEMBERSPOT_LINK_RELR") != "0";
    // x86-64 only: GNU ld (2.38 and newer) and lld both pack them there.
    let supported_target = env("CARGO_CFG_TARGET_OS") == "linux"
        && env("CARGO_CFG_TARGET_ENV") == "gnu"
        && env("CARGO_CFG_TARGET_ARCH") == "x86_64";
    // The host's glibc says nothing about a cross target's.
    let native = env("HOST") == env("TARGET");
    if wanted && supported_target && native && host_glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// `getconf GNU_LIBC_VERSION` prints e.g. `glibc 2.36`; anything else counts as too old.
fn host_glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}
