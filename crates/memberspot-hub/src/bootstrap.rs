//! Opening a hub from settings: the data directory, the database URL and
//! the master key.

use std::path::{Path, PathBuf};

use memberspot_store::Store;

use crate::secrets::{CHECK_META_KEY, KeySource, MasterKey};
use crate::{EmbeddedSandbox, Hub, HubError};

/// Where the hub keeps its state.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Everything the hub writes lives here (SQLite file, key file).
    pub data_dir: PathBuf,
    /// `postgres://…` to share state between instances; default SQLite in the data directory.
    pub database_url: Option<String>,
    /// The master key from the environment (`MEMBERSPOT_MASTER_KEY`), if set.
    pub master_key: Option<String>,
}

impl HubSettings {
    pub fn key_file(&self) -> PathBuf {
        self.data_dir.join("master.key")
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) if !u.trim().is_empty() => u.trim().to_string(),
            _ => format!("sqlite://{}", self.data_dir.join("hub.db").display()),
        }
    }
}

/// Opens the store and the master key, then the hub.
pub async fn open(
    settings: &HubSettings,
    embedded: Option<EmbeddedSandbox>,
) -> Result<(Hub, KeySource), HubError> {
    create_dir(&settings.data_dir)?;
    let store = Store::open(&settings.database_url()).await?;
    let set_up = store.get_meta(CHECK_META_KEY).await?.is_some();
    let (key, source) = MasterKey::load_or_create(
        settings.master_key.as_deref(),
        &settings.key_file(),
        !set_up,
    )?;
    let hub = Hub::open(store, key, embedded).await?;
    Ok((hub, source))
}

fn create_dir(dir: &Path) -> Result<(), HubError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        HubError::Unavailable(format!(
            "cannot create the data directory {}: {e}",
            dir.display()
        ))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The directory holds the key file and the database: owner only.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}
