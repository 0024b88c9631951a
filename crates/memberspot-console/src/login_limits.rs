//! How many sign-ins the console tries, and for whom (in memory, per instance).
//!
//! Three limits, each aimed at one abuse without handing an attacker a way to lock a
//! real user out:
//! - every attempt from one network (an IPv4 address, an IPv6 /64: one host usually has
//!   the whole /64, so counting single IPv6 addresses would give it 2^64 buckets);
//! - every attempt for one name from one network (a typo-prone user waits a minute; a
//!   guesser elsewhere does not take this user's attempts);
//! - failed attempts for one name from anywhere (guessing one password from many
//!   networks). Only failures count, and only this limit is shared across networks, so
//!   locking `anna` out takes a sustained stream of failures from several networks.
//!
//! Unknown names count like real ones, so the limits say nothing about who exists.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Console user names are at most 64 characters; longer keys only cost memory.
const NAME_KEY_CHARS: usize = 65;
/// Keys kept before idle ones are dropped.
const KEYS_BEFORE_CLEANUP: usize = 10_000;
/// At most one sweep of the limiters' keys this often: during a flood every key is recent,
/// and sweeping on every attempt would cost as much as the keys.
const CLEANUP_EVERY: Duration = Duration::from_secs(5);
const MINUTE: Duration = Duration::from_secs(60);

/// The sign-in limits of one console instance.
pub struct LoginLimits {
    per_network: DefaultKeyedRateLimiter<IpAddr>,
    per_name_and_network: DefaultKeyedRateLimiter<(String, IpAddr)>,
    failures_per_name: RecentFailures,
    next_cleanup: Mutex<Instant>,
}

impl LoginLimits {
    pub fn new(
        per_name_and_network_per_minute: u32,
        per_network_per_minute: u32,
        failures_per_name_per_minute: u32,
    ) -> LoginLimits {
        let q = |n: u32| Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        LoginLimits {
            per_network: RateLimiter::keyed(q(per_network_per_minute)),
            per_name_and_network: RateLimiter::keyed(q(per_name_and_network_per_minute)),
            failures_per_name: RecentFailures::new(failures_per_name_per_minute.max(1), MINUTE),
            next_cleanup: Mutex::new(Instant::now()),
        }
    }

    /// Takes one attempt for `name` from `address`, or says how long to wait.
    pub fn take(&self, name: &str, address: IpAddr) -> Result<(), Duration> {
        self.forget_idle_keys();
        let network = network_of(address);
        let name = name_key(name);
        self.failures_per_name.wait(&name)?;
        let now = DefaultClock::default().now();
        self.per_network
            .check_key(&network)
            .map_err(|n| n.wait_time_from(now))?;
        self.per_name_and_network
            .check_key(&(name, network))
            .map_err(|n| n.wait_time_from(now))
    }

    /// Whether `name` may try its password again (the failures limit alone): for checks
    /// of the current password by a signed-in user, where the address limits do not fit.
    pub fn failures_wait(&self, name: &str) -> Result<(), Duration> {
        self.failures_per_name.wait(&name_key(name))
    }

    /// Forgets keys whose limit is full again, now and then, so that guessed names and
    /// addresses do not pile up in memory.
    fn forget_idle_keys(&self) {
        let many = self.per_network.len() > KEYS_BEFORE_CLEANUP
            || self.per_name_and_network.len() > KEYS_BEFORE_CLEANUP;
        if !many {
            return;
        }
        let now = Instant::now();
        {
            let mut next = self.next_cleanup.lock().unwrap_or_else(|p| p.into_inner());
            if now < *next {
                return;
            }
            *next = now + CLEANUP_EVERY;
        }
        self.per_network.retain_recent();
        self.per_name_and_network.retain_recent();
    }

    /// Records a failed attempt for `name` (a wrong password or an unknown name).
    pub fn failed(&self, name: &str) {
        self.failures_per_name.record(&name_key(name));
    }
}

/// The key the limits count a name under: case-folded, cut to a possible name's length.
fn name_key(name: &str) -> String {
    name.chars()
        .take(NAME_KEY_CHARS)
        .collect::<String>()
        .to_lowercase()
}

/// The network an address is counted under: IPv4 as it is, IPv6 by its /64.
fn network_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// Failures per key over a sliding window (a governor bucket cannot be read without
/// taking from it, and only failures may take).
struct RecentFailures {
    max: usize,
    window: Duration,
    seen: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RecentFailures {
    fn new(max: u32, window: Duration) -> RecentFailures {
        RecentFailures {
            max: usize::try_from(max).unwrap_or(usize::MAX),
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// How long until `key` may try again, if its failures fill the window.
    fn wait(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let Some(times) = seen.get_mut(key) else {
            return Ok(());
        };
        while times.front().is_some_and(|t| now - *t >= self.window) {
            times.pop_front();
        }
        match times.front() {
            Some(oldest) if times.len() >= self.max => Err(self.window - (now - *oldest)),
            _ => Ok(()),
        }
    }

    fn record(&self, key: &str) {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() > KEYS_BEFORE_CLEANUP {
            let window = self.window;
            seen.retain(|_, t| t.back().is_some_and(|last| now - *last < window));
        }
        let times = seen.entry(key.to_owned()).or_default();
        times.push_back(now);
        // Only the newest `max` matter for the wait.
        while times.len() > self.max {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_share_a_limit() {
        let limits = LoginLimits::new(100, 3, 100);
        for i in 0..3 {
            let addr = ip(&format!("2001:db8:1:2:{i}::{i}"));
            assert!(limits.take(&format!("name{i}"), addr).is_ok());
        }
        assert!(
            limits.take("other", ip("2001:db8:1:2:ffff::1")).is_err(),
            "another address of the same /64 is the same network"
        );
        assert!(limits.take("other", ip("2001:db8:1:3::1")).is_ok());
        // IPv4 is counted per address.
        assert!(limits.take("x", ip("192.0.2.1")).is_ok());
        assert!(limits.take("x", ip("192.0.2.2")).is_ok());
    }

    #[test]
    fn one_network_cannot_use_up_a_name_for_another() {
        let limits = LoginLimits::new(2, 100, 100);
        let attacker = ip("198.51.100.7");
        assert!(limits.take("Anna", attacker).is_ok());
        assert!(limits.take("anna", attacker).is_ok());
        assert!(limits.take("ANNA", attacker).is_err(), "names fold case");
        assert!(
            limits.take("anna", ip("192.0.2.10")).is_ok(),
            "anna's own network"
        );
    }

    #[test]
    fn only_failures_count_towards_the_shared_limit_of_a_name() {
        let limits = LoginLimits::new(100, 100, 3);
        // Attempts that do not fail (a successful sign-in) take nothing from it.
        for i in 0..10 {
            assert!(limits.take("anna", ip(&format!("192.0.2.{i}"))).is_ok());
        }
        for _ in 0..3 {
            limits.failed("anna");
        }
        let wait = limits
            .take("anna", ip("203.0.113.9"))
            .expect_err("three failures from anywhere fill the minute");
        assert!(wait <= MINUTE && wait > Duration::ZERO, "{wait:?}");
        assert!(limits.take("bert", ip("203.0.113.9")).is_ok());
    }

    #[test]
    fn failures_leave_the_window_after_it() {
        let f = RecentFailures::new(2, Duration::from_millis(50));
        f.record("a");
        f.record("a");
        f.record("a");
        assert!(f.wait("a").is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(f.wait("a").is_ok());
        assert_eq!(f.seen.lock().expect("lock")["a"].len(), 0);
    }

    #[test]
    fn long_names_are_counted_under_a_bounded_key() {
        let limits = LoginLimits::new(1, 100, 100);
        let long = "a".repeat(100_000);
        assert!(limits.take(&long, ip("192.0.2.1")).is_ok());
        assert!(limits.take(&format!("{long}b"), ip("192.0.2.1")).is_err());
        assert_eq!(name_key(&long).chars().count(), NAME_KEY_CHARS);
    }

    #[test]
    fn keys_of_past_attempts_are_forgotten() {
        let limits = LoginLimits::new(100, 100, 100);
        for i in 0..=KEYS_BEFORE_CLEANUP {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32));
            assert!(limits.take("x", addr).is_ok());
        }
        // Over the mark: a sweep runs, but they are all recent, so none is forgotten.
        assert!(limits.take("x", ip("192.0.2.1")).is_ok());
        assert!(limits.per_network.len() > KEYS_BEFORE_CLEANUP);
        // Later, the next sweep waits its turn.
        std::thread::sleep(Duration::from_millis(1300));
        assert!(limits.take("x", ip("192.0.2.1")).is_ok());
        assert!(limits.per_network.len() > KEYS_BEFORE_CLEANUP);
        // One attempt of 100 a minute is back after 0.6 s (governor keeps a key for twice
        // that): the next sweep forgets them.
        *limits.next_cleanup.lock().expect("lock") = Instant::now();
        assert!(limits.take("x", ip("192.0.2.1")).is_ok());
        assert!(
            limits.per_network.len() < 10,
            "{}",
            limits.per_network.len()
        );
        assert!(limits.per_name_and_network.len() < 10);
    }
}
