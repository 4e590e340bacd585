//! Password hashing with argon2id (OWASP parameters: 19 MiB, 2 passes).
//!
//! Hashing is deliberately slow and memory-hungry (19 MiB per hash), so it
//! runs on tokio's blocking pool, never on the request threads, and through a
//! bounded queue ([`Passwords`]): at most one hash per core at a time, a
//! bounded number of requests waiting for their turn, and `M_LIMIT_EXCEEDED`
//! beyond. An unauthenticated burst of registrations or logins therefore
//! costs at most `slots × 19 MiB` of hashing memory, whatever its size.
//!
//! Each hash gets its working memory from [`HashMemory`], sized so that the
//! allocator maps it for that hash alone and unmaps it afterwards: the memory
//! goes back to the system as soon as the hash is done, instead of staying in
//! the allocator's per-thread arenas (glibc kept hundreds of MiB resident
//! after a burst of logins on the blocking pool's threads).

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use argon2::{
    password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString},
    Algorithm, Argon2, Block, Params, Version,
};
use tokio::sync::{OnceCell, Semaphore};

use crate::error::{Error, ErrorKind, Result};

/// Longest password accepted (argon2 itself would take more, but nobody needs it).
pub const MAX_PASSWORD_BYTES: usize = 512;

/// Requests that may wait for a hashing slot; beyond, they are refused.
const MAX_WAITING: usize = 1024;

/// How long a refused request is told to wait.
const RETRY_AFTER_MS: u64 = 2_000;

/// The hashing queue: a slot per core, a bounded waiting line.
pub struct Passwords {
    slots: Arc<Semaphore>,
    slot_count: usize,
    /// Working memory of finished hashes, reused while a burst lasts and
    /// released when the last running hash ends with nobody waiting.
    spare_memory: Arc<std::sync::Mutex<Vec<HashMemory>>>,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// A hash of a fixed password, verified against for unknown accounts.
    dummy: OnceCell<String>,
}

impl Default for Passwords {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::new(cores, MAX_WAITING)
    }
}

/// Counts a request in the waiting line until it has its slot (or gives up).
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Passwords {
    pub fn new(slots: usize, max_waiting: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            slot_count: slots.max(1),
            spare_memory: Arc::default(),
            waiting: AtomicUsize::new(0),
            max_waiting,
            dummy: OnceCell::new(),
        }
    }

    /// Runs `job` on the blocking pool once a slot is free, with working memory.
    async fn run<T: Send + 'static>(&self, job: impl FnOnce(&mut HashMemory) -> T + Send + 'static) -> Result<T> {
        let in_line = InLine(&self.waiting);
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            drop(in_line);
            tracing::warn!("password hashing queue full; refusing a request");
            return Err(Error::new(
                ErrorKind::LimitExceeded { retry_after_ms: RETRY_AFTER_MS },
                "The server is busy checking passwords; try again shortly",
            ));
        }
        let permit =
            Arc::clone(&self.slots).acquire_owned().await.map_err(|e| Error::internal("password hashing queue", e))?;
        drop(in_line);
        let spare_memory = Arc::clone(&self.spare_memory);
        let outcome = tokio::task::spawn_blocking(move || {
            let mut memory = lock(&spare_memory).pop().unwrap_or_default();
            let outcome = job(&mut memory);
            lock(&spare_memory).push(memory);
            drop(permit);
            outcome
        })
        .await
        .map_err(|e| Error::internal("password hashing task", e));
        self.release_memory_when_idle();
        outcome
    }

    /// Every hash returns its memory before its slot, so the one that sees
    /// every slot free and nobody waiting frees every buffer.
    fn release_memory_when_idle(&self) {
        if self.slots.available_permits() == self.slot_count && self.waiting.load(Ordering::SeqCst) == 0 {
            lock(&self.spare_memory).clear();
        }
    }

    pub async fn hash(&self, password: &str) -> Result<String> {
        if password.is_empty() {
            return Err(Error::invalid_param("The password must not be empty"));
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::invalid_param(format!("The password must be at most {MAX_PASSWORD_BYTES} bytes")));
        }
        let password = password.to_owned();
        self.run(move |memory| hash_now(&password, memory)).await?
    }

    /// True when `password` matches the stored PHC string.
    pub async fn verify(&self, password: &str, stored: &str) -> Result<bool> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let password = password.to_owned();
        let stored = stored.to_owned();
        self.run(move |memory| verify_now(&password, &stored, memory)).await?
    }

    /// Runs a verification against a fixed hash, for unknown accounts.
    pub async fn verify_against_dummy(&self, password: &str) -> Result<bool> {
        let dummy = self.dummy.get_or_try_init(|| self.hash("conduit dummy password")).await?;
        self.verify(password, dummy).await
    }
}

/// Working memory for one argon2 computation. glibc maps allocations above
/// its largest mmap threshold (32 MiB) on their own and unmaps them when
/// freed; below it, a freed 19 MiB block would stay in the arena of the
/// thread that used it. So the capacity asked for is above that threshold,
/// and only the blocks the hash needs are touched (resident).
#[derive(Default)]
struct HashMemory(Vec<Block>);

/// Blocks (1 KiB each) asked for: above glibc's 32 MiB mmap threshold maximum.
const MAPPED_BLOCKS: usize = 33 * 1024;

impl HashMemory {
    /// At least the blocks `params` need (argon2 writes each block before
    /// reading it, so a buffer is reused as it is).
    fn blocks_for(&mut self, params: &Params) -> &mut [Block] {
        let needed = params.block_count();
        if self.0.len() < needed {
            let mut blocks = Vec::with_capacity(needed.max(MAPPED_BLOCKS));
            blocks.resize(needed, Block::default());
            self.0 = blocks;
        }
        &mut self.0[..needed]
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// argon2id with the default (OWASP) parameters and a fresh salt, as a PHC string.
fn hash_now(password: &str, memory: &mut HashMemory) -> Result<String> {
    let failed = |e: argon2::password_hash::Error| Error::internal("password hashing", e);
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut salt_bytes).map_err(failed)?;
    let blocks = memory.blocks_for(&params);
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        Ok(argon2.hash_password_into_with_memory(password.as_bytes(), raw_salt, out, &mut *blocks)?)
    })
    .map_err(failed)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(failed)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches a stored PHC string (argon2 of any variant and parameters).
fn verify_now(password: &str, stored: &str, memory: &mut HashMemory) -> Result<bool> {
    let corrupt = |e: argon2::password_hash::Error| Error::internal("stored password hash", e);
    let parsed = PasswordHash::new(stored).map_err(corrupt)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(Error::internal("stored password hash", "no salt or hash"));
    };
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(corrupt)?;
    let version =
        parsed.version.map(Version::try_from).transpose().map_err(|e| Error::internal("stored password hash", e))?;
    let params = Params::try_from(&parsed).map_err(corrupt)?;
    let argon2 = Argon2::new(algorithm, version.unwrap_or_default(), params.clone());
    let mut salt_bytes = [0u8; 64];
    let raw_salt = salt.decode_b64(&mut salt_bytes).map_err(corrupt)?;
    let blocks = memory.blocks_for(&params);
    let computed = Output::init_with(expected.len(), |out| {
        Ok(argon2.hash_password_into_with_memory(password.as_bytes(), raw_salt, out, &mut *blocks)?)
    })
    .map_err(corrupt)?;
    // `Output` compares in constant time.
    Ok(computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_are_salted() {
        let passwords = Passwords::default();
        let first = passwords.hash("correct horse").await.unwrap();
        let second = passwords.hash("correct horse").await.unwrap();
        assert!(first.starts_with("$argon2id$"));
        assert_ne!(first, second, "each hash has its own salt");
        assert!(passwords.verify("correct horse", &first).await.unwrap());
        assert!(!passwords.verify("wrong horse", &first).await.unwrap());
        assert!(!passwords.verify_against_dummy("correct horse").await.unwrap());
    }

    #[test]
    fn hashes_of_the_argon2_crate_still_verify() {
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::generate(&mut OsRng);
        let stored = Argon2::default().hash_password(b"old secret", &salt).unwrap().to_string();
        let mut memory = HashMemory::default();
        assert!(verify_now("old secret", &stored, &mut memory).unwrap());
        assert!(!verify_now("other secret", &stored, &mut memory).unwrap());
        let ours = hash_now("new secret", &mut memory).unwrap();
        use argon2::password_hash::PasswordVerifier;
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"new secret", &parsed).is_ok(), "{ours}");
    }

    #[tokio::test]
    async fn empty_and_oversized_passwords_are_refused() {
        let passwords = Passwords::default();
        assert!(passwords.hash("").await.is_err());
        assert!(passwords.hash(&"x".repeat(MAX_PASSWORD_BYTES + 1)).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_one_hash_per_slot_runs_and_the_line_is_bounded() {
        let passwords = Arc::new(Passwords::new(1, 2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (passwords, running, most) = (Arc::clone(&passwords), Arc::clone(&running), Arc::clone(&most));
            tasks.push(tokio::spawn(async move {
                passwords
                    .run(move |_| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            }));
        }
        let mut refused = 0;
        for task in tasks {
            if let Err(error) = task.await.unwrap() {
                assert!(matches!(error.kind, ErrorKind::LimitExceeded { .. }), "{error:?}");
                refused += 1;
            }
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "one slot: never two hashes at once");
        assert!(refused >= 3, "a line of 2 behind 1 slot refuses the rest of 6 at once: {refused}");
        assert_eq!(passwords.waiting.load(Ordering::SeqCst), 0, "the line empties");
        assert!(lock(&passwords.spare_memory).is_empty(), "memory is released once idle");
    }
}
