//! Where a sign-in comes from, and the per-address limit on failed sign-ins.
//!
//! The address is the TCP peer's (axum's `ConnectInfo`). Behind a reverse proxy that
//! is the proxy's, so with `QUOTELINE_TRUST_FORWARDED_FOR=1` the last address in
//! `X-Forwarded-For` is taken instead: the one the proxy itself appended. Set it only
//! when every request comes through one such proxy; anyone reaching the server
//! directly could otherwise claim any address. An IPv6 address counts as its /64,
//! which one host usually holds whole.
//!
//! The per-address allowance lives in this process's memory (a bounded moka cache):
//! it guards this process's CPU and memory against one address, so another process
//! on the same database keeps its own. The per-name-and-address count, which guards
//! accounts, is in the database (`attempts`).

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use moka::ops::compute::Op;

use super::throttle::AddressLimit;

/// How many addresses a process remembers; beyond it the least used are forgotten.
pub const REMEMBERED_ADDRESSES: u64 = 100_000;

/// The address a sign-in is counted against, as text: an IPv4 address, or an IPv6
/// address's /64 network (`2001:db8:1:2::/64`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddress(String);

impl ClientAddress {
    pub fn of(ip: IpAddr) -> ClientAddress {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientAddress(v4.to_string()),
            IpAddr::V6(v6) => {
                let network = u128::from(v6) & !(u128::MAX >> 64);
                ClientAddress(format!("{}/64", Ipv6Addr::from(network)))
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who may try to sign in how often, and what each address has used. Clones share
/// the counts.
#[derive(Clone, Debug)]
pub struct SignInLimits {
    trust_forwarded_for: bool,
    limit: AddressLimit,
    /// Per address, when its allowance is whole again (see `AddressLimit::take`).
    addresses: moka::future::Cache<ClientAddress, Instant>,
}

impl SignInLimits {
    pub fn new(limit: AddressLimit, trust_forwarded_for: bool) -> SignInLimits {
        SignInLimits {
            trust_forwarded_for,
            limit,
            addresses: moka::future::Cache::builder()
                .max_capacity(REMEMBERED_ADDRESSES)
                .time_to_idle(limit.memory())
                .build(),
        }
    }

    /// The default limit; `X-Forwarded-For` trusted when
    /// `QUOTELINE_TRUST_FORWARDED_FOR=1`.
    pub fn from_env() -> SignInLimits {
        let trust = std::env::var("QUOTELINE_TRUST_FORWARDED_FOR").is_ok_and(|v| v == "1");
        SignInLimits::new(AddressLimit::default(), trust)
    }

    /// The address to count a request against. Without a peer address (a server
    /// started without `ConnectInfo`, as in some tests and benchmarks) every request
    /// counts against one unspecified address: one shared limit, never none.
    pub fn client_address(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> ClientAddress {
        let forwarded = self
            .trust_forwarded_for
            .then(|| last_forwarded_for(headers))
            .flatten();
        let ip = forwarded
            .or(peer)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        ClientAddress::of(ip)
    }

    /// Takes one attempt from `address`'s allowance; `Err` is how long it must wait.
    pub async fn take(&self, address: &ClientAddress) -> Result<(), Duration> {
        let limit = self.limit;
        let now = Instant::now();
        let mut refused = None;
        self.addresses
            .entry_by_ref(address)
            .and_compute_with(|entry| {
                let outcome = limit.take(entry.map(|e| e.into_value()), now);
                let op = match outcome {
                    Ok(full_at) => Op::Put(full_at),
                    Err(wait) => {
                        refused = Some(wait);
                        Op::Nop
                    }
                };
                std::future::ready(op)
            })
            .await;
        refused.map_or(Ok(()), Err)
    }

    /// Gives back the attempt a successful sign-in took.
    pub async fn give_back(&self, address: &ClientAddress) {
        let limit = self.limit;
        let now = Instant::now();
        self.addresses
            .entry_by_ref(address)
            .and_compute_with(|entry| {
                std::future::ready(match entry {
                    Some(entry) => Op::Put(limit.give_back(entry.into_value(), now)),
                    None => Op::Nop,
                })
            })
            .await;
    }
}

/// The last address in the last `X-Forwarded-For` header: the one our proxy added.
fn last_forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn the_peer_is_the_address_unless_forwarded_for_is_trusted() {
        let peer = Some("192.0.2.7".parse().unwrap());
        let headers = forwarded(&["198.51.100.1, 203.0.113.9"]);
        let untrusting = SignInLimits::new(AddressLimit::default(), false);
        let trusting = SignInLimits::new(AddressLimit::default(), true);

        assert_eq!(
            untrusting.client_address(peer, &headers).as_str(),
            "192.0.2.7"
        );
        assert_eq!(
            trusting.client_address(peer, &headers).as_str(),
            "203.0.113.9"
        );
        assert_eq!(
            trusting
                .client_address(peer, &forwarded(&["198.51.100.1", "203.0.113.5"]))
                .as_str(),
            "203.0.113.5"
        );
        assert_eq!(
            trusting
                .client_address(peer, &forwarded(&["nonsense"]))
                .as_str(),
            "192.0.2.7"
        );
        assert_eq!(
            trusting.client_address(None, &HeaderMap::new()).as_str(),
            "0.0.0.0"
        );
    }

    #[test]
    fn an_ipv6_address_counts_as_its_slash_64_and_a_mapped_ipv4_as_itself() {
        let of = |ip: &str| ClientAddress::of(ip.parse().unwrap()).0;

        assert_eq!(of("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(of("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::/64");
        assert_eq!(of("::ffff:192.0.2.1"), "192.0.2.1");
    }

    #[tokio::test]
    async fn each_address_has_its_own_allowance_and_a_success_gives_its_attempt_back() {
        let limits = SignInLimits::new(
            AddressLimit {
                burst: 2,
                every: Duration::from_secs(60),
            },
            false,
        );
        let a = ClientAddress::of("192.0.2.1".parse().unwrap());
        let b = ClientAddress::of("192.0.2.2".parse().unwrap());
        limits.take(&a).await.unwrap();
        limits.take(&a).await.unwrap();

        let wait = limits.take(&a).await.unwrap_err();
        assert!(wait > Duration::from_secs(55), "{wait:?}");
        assert_eq!(limits.take(&b).await, Ok(()));
        limits.give_back(&a).await;
        assert_eq!(limits.take(&a).await, Ok(()));
    }
}
