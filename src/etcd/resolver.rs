//! Name resolution for the agents: an IP-literal host resolved in place, a host name handed to
//! ureq's resolver.
//!
//! Rule: no thread is spawned to reach an IP literal (ureq's resolver spawns one per lookup).

use std::net::{IpAddr, SocketAddr};

use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// Resolves IP-literal hosts in place and hands host names to ureq's resolver. ureq's resolver
/// spawns a thread per lookup whenever a timeout applies — on every request, pooled connection or
/// not — which put a thread spawn on the path of every keepalive, look and watch.
#[derive(Debug, Default)]
pub(super) struct LiteralResolver(DefaultResolver);

impl Resolver for LiteralResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        match (literal.parse::<IpAddr>(), uri.port_u16()) {
            (Ok(ip), Some(port)) => {
                let mut addresses = self.empty();
                addresses.push(SocketAddr::new(ip, port));
                Ok(addresses)
            }
            _ => self.0.resolve(uri, config, timeout),
        }
    }
}
