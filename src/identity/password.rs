//! Password hashing with argon2id. Each hash costs tens of milliseconds of CPU and
//! 19 MiB of memory on purpose, so hashes run on threads of their own, one per core:
//! however many sign-ins arrive at once, at most that many hashes (and 19 MiB each)
//! are under way. A sign-in waits its turn for at most [`SIGN_IN_WAIT`] and is then
//! told the service is busy; nothing else in the process waits behind a hash.
//!
//! Bounding the hashes at once is not enough on glibc: after the first 19 MiB block
//! is freed, glibc raises its mmap threshold above that size, so later blocks come
//! from the arenas' heaps, which keep them (fragmented, two or three each) once
//! freed: 80 sign-ins left 400 MB resident with two hashing threads. So the pool
//! fixes the threshold at 8 MiB before the first hash: every argon2 block is mapped
//! for its hash and unmapped after it, while the smaller buffers every response
//! needs (a compressor's state is over 1 MiB) stay on the heap and are reused: at
//! 1 MiB each response mapped and unmapped its compressor, which cost every page
//! about 40% of its throughput in page faults and TLB shootdowns.

use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// The shortest password `user add` accepts.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// A password of `length` characters a person can read out and type (no 0/o, 1/l),
/// from a generator fit for secrets: the demo's and the one-time ones an admin gives.
pub fn generate(length: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..length)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Why `password` would be a poor one for the person whose name and other details
/// are `about`, in words for them: too short, or too easy to guess by zxcvbn's
/// estimate (fewer than 10^10 guesses), with its advice. `None` for a good one.
pub fn weakness(password: &str, about: &[&str]) -> Option<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Some(format!(
            "Use at least {MIN_PASSWORD_CHARS} characters for your new password"
        ));
    }
    let estimate = zxcvbn::zxcvbn(password, about);
    if estimate.score() >= zxcvbn::Score::Three {
        return None;
    }
    let mut words = vec!["This password would be too easy to guess".to_owned()];
    if let Some(feedback) = estimate.feedback() {
        words.extend(feedback.warning().map(|w| w.to_string()));
        words.extend(feedback.suggestions().iter().map(ToString::to_string));
    }
    Some(
        words
            .iter()
            .map(|w| w.trim_end_matches('.'))
            .collect::<Vec<_>>()
            .join(". ")
            + ".",
    )
}

/// How long a sign-in waits for a hashing thread before it is answered 503.
pub const SIGN_IN_WAIT: Duration = Duration::from_secs(5);

/// Every hashing thread was busy for [`SIGN_IN_WAIT`]: try again shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("every password-hashing thread is busy")]
pub struct Busy;

/// A hashing thread held for one hash; the next waiter gets it when the hash is done.
#[derive(Debug)]
pub struct Turn {
    _permit: OwnedSemaphorePermit,
    jobs: mpsc::Sender<Job>,
}

/// A turn on a hashing thread, waiting at most [`SIGN_IN_WAIT`] for one.
pub async fn turn() -> Result<Turn, Busy> {
    POOL.turn(SIGN_IN_WAIT).await
}

/// How many hashes may run at once: one per core this process may use.
pub fn hashing_threads() -> usize {
    POOL.threads
}

/// The PHC string (`$argon2id$v=19$m=…`) for `password`, with a fresh random salt.
pub async fn hash(password: &str) -> anyhow::Result<String> {
    let password = password.to_owned();
    POOL.turn_when_free()
        .await
        .run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|error| anyhow::anyhow!("cannot hash a password: {error}"))
        })
        .await?
}

impl Turn {
    /// Whether `password` matches `stored` (a PHC string). `None` checks against a
    /// hash of no one's password, so that an unknown username takes as long to refuse
    /// as a wrong password and the timing does not tell which usernames exist.
    pub async fn verify(self, password: &str, stored: Option<String>) -> anyhow::Result<bool> {
        let password = password.to_owned();
        self.run(move || {
            let known = stored.is_some();
            let stored = stored.unwrap_or_else(|| NO_ONES_HASH.clone());
            let matches = Argon2::default()
                .verify_password(password.as_bytes(), stored.as_str())
                .is_ok();
            known && matches
        })
        .await
    }

    /// Runs `work` on a hashing thread. The turn is given back when the work is done,
    /// even if the request that asked for it has gone.
    async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (done, result) = oneshot::channel();
        let jobs = self.jobs.clone();
        let job: Job = Box::new(move || {
            let _turn = self;
            let _ = done.send(work());
        });
        jobs.send(job)
            .map_err(|_| anyhow::anyhow!("the password-hashing threads have stopped"))?;
        result
            .await
            .map_err(|_| anyhow::anyhow!("a password-hashing thread stopped mid-hash"))
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads and the turns that admit work to them: as many turns as
/// threads, so a job never waits in the channel for long.
struct Pool {
    threads: usize,
    turns: Arc<Semaphore>,
    jobs: mpsc::Sender<Job>,
}

/// The process's hashing threads, started on first use.
static POOL: LazyLock<Pool> =
    LazyLock::new(|| Pool::start(std::thread::available_parallelism().map_or(1, usize::from)));

impl Pool {
    fn start(threads: usize) -> Pool {
        map_large_blocks_afresh();
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held while taking a job, not while doing it.
                        let next = queue.lock().map(|queue| queue.recv());
                        match next {
                            Ok(Ok(job)) => job(),
                            _ => return,
                        }
                    }
                })
                .expect("start a password-hashing thread");
        }
        Pool {
            threads,
            turns: Arc::new(Semaphore::new(threads)),
            jobs,
        }
    }

    async fn turn(&self, wait: Duration) -> Result<Turn, Busy> {
        match tokio::time::timeout(wait, self.turns.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(self.turn_with(permit)),
            _ => Err(Busy),
        }
    }

    /// A turn however long that takes (adding users, not answering requests).
    async fn turn_when_free(&self) -> Turn {
        let permit = self.turns.clone().acquire_owned().await;
        self.turn_with(permit.expect("the hashing semaphore is never closed"))
    }

    fn turn_with(&self, permit: OwnedSemaphorePermit) -> Turn {
        Turn {
            _permit: permit,
            jobs: self.jobs.clone(),
        }
    }
}

/// Makes glibc map every allocation of 8 MiB or more on its own and unmap it when
/// freed, instead of raising the threshold past argon2's blocks and keeping them in
/// its arenas (see the module's notes). Other allocators give large blocks back as
/// they are.
/// Far below argon2's 19 MiB blocks, above any buffer a request needs.
pub const MMAP_THRESHOLD: i32 = 8 << 20;

/// Called by the hashing pool when it starts, and by the `quoteline` binary at its
/// start (which sends blocks of this size or more to glibc's malloc).
pub fn map_large_blocks_afresh() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter, under glibc's own lock.
        let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if set != 1 {
            tracing::warn!("could not fix the allocator's mmap threshold");
        }
    }
}

static NO_ONES_HASH: LazyLock<String> = LazyLock::new(|| {
    let random: [u8; 32] = rand::random();
    Argon2::default()
        .hash_password(&random)
        .expect("argon2 hashes 32 random bytes")
        .to_string()
});

#[cfg(test)]
mod weakness_tests {
    use super::*;

    #[test]
    fn short_common_and_personal_passwords_are_refused_with_advice() {
        let short = weakness("Ab3$", &[]).unwrap();
        assert_eq!(short, "Use at least 8 characters for your new password");

        let common = weakness("password123", &[]).unwrap();
        assert!(
            common.starts_with("This password would be too easy to guess. "),
            "{common}"
        );
        assert!(
            common.len() > "This password would be too easy to guess.".len(),
            "{common}"
        );

        // Their own name is the first thing a guesser tries.
        assert!(weakness("ashamehta2026", &["ashamehta"]).is_some());

        assert_eq!(weakness("correct horse battery staple", &[]), None);
        assert_eq!(weakness("tQ8#vL2!pZ9m", &["asha"]), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn verify(password: &str, stored: Option<String>) -> bool {
        turn()
            .await
            .unwrap()
            .verify(password, stored)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_hash_is_an_argon2id_phc_string_that_verifies_only_its_password() {
        let stored = hash("correct horse").await.unwrap();

        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains("correct horse"));
        assert!(verify("correct horse", Some(stored.clone())).await);
        assert!(!verify("correct hors", Some(stored)).await);
    }

    #[tokio::test]
    async fn no_password_matches_an_unknown_user() {
        assert!(!verify("anything at all", None).await);
    }

    #[tokio::test]
    async fn the_same_password_hashes_differently_each_time() {
        assert_ne!(
            hash("same words").await.unwrap(),
            hash("same words").await.unwrap()
        );
    }

    #[tokio::test]
    async fn a_turn_waits_while_every_thread_is_taken_and_hashes_on_the_pools_thread() {
        let pool = Pool::start(1);
        let taken = pool.turn(SIGN_IN_WAIT).await.unwrap();

        assert_eq!(
            pool.turn(Duration::from_millis(20)).await.unwrap_err(),
            Busy
        );
        drop(taken);
        let on = pool
            .turn(SIGN_IN_WAIT)
            .await
            .unwrap()
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert_eq!(on.as_deref(), Some("argon2-0"));
    }
}
