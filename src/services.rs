//! The server's shared state, built once at start-up and handed to every
//! request as an `Arc` — no global singleton.

use std::sync::Arc;

use crate::{
    config::Config,
    crypto::signing_key::ServerKey,
    storage::{Storage, StorageError},
    users::Users,
};

pub struct Services {
    pub config: Config,
    pub storage: Arc<Storage>,
    pub users: Users,
    pub server_key: ServerKey,
}

impl Services {
    /// Opens the database and loads (or creates) the server signing key.
    pub fn open(config: Config) -> Result<Arc<Self>, StorageError> {
        let storage = Arc::new(Storage::open(&config.database_path, config.cache_capacity_bytes())?);
        Self::with_storage(config, storage)
    }

    pub fn with_storage(config: Config, storage: Arc<Storage>) -> Result<Arc<Self>, StorageError> {
        let server_key = ServerKey::load_or_generate(&storage)?;
        let users = Users::new(Arc::clone(&storage), &config);
        Ok(Arc::new(Self { config, storage, users, server_key }))
    }
}
