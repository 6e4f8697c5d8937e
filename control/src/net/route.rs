//! The mobile node's routing for its home address while the Mobile IP tunnel runs inside the
//! VPN: a policy rule sends whatever is sent from the home address to a table of its own whose
//! default route is the VPN device, with the tunnel's MTU locked (RFC 2003 §5.1: the tunnel
//! MTU is the device's minus the IP-in-IP header), so the stack sizes TCP segments for the
//! tunnel instead of the VPN having to fragment or drop them.

use std::net::Ipv4Addr;

use futures_util::TryStreamExt as _;
use netlink_packet_route::route::{RouteAttribute, RouteMetric};
use netlink_packet_route::rule::{RuleAction, RuleAttribute};

/// The routing table and rule priority mipd owns (before strongSwan's table 220 at 220, and
/// before the main table).
pub const HOME_TABLE: u32 = 4341;
pub const HOME_RULE_PRIORITY: u32 = 100;

/// A routing table mipd owns, with the priority of its rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    pub id: u32,
    pub priority: u32,
}

/// The internal home address's table: into the VPN (outside), or to a foreign agent inside
/// (mode f).
pub const INTERNAL_HOME: Table = Table {
    id: HOME_TABLE,
    priority: HOME_RULE_PRIORITY,
};
/// The external home address's table: to a foreign agent outside (mode fvc, RFC 5265 §2.4:
/// the x-MIP layer's traffic, IKE and ESP from the x-HoA, goes through the FA).
pub const EXTERNAL_HOME: Table = Table {
    id: HOME_TABLE + 1,
    priority: HOME_RULE_PRIORITY + 1,
};

/// `RTAX_MTU`: the lock bit of the MTU metric.
const RTAX_MTU: u32 = 2;

/// Routes everything from `home` into device `ifindex` with MTU `mtu`, replacing what was
/// there.
pub async fn route_home_via(
    handle: &rtnetlink::Handle,
    home: Ipv4Addr,
    ifindex: u32,
    mtu: u32,
) -> Result<(), rtnetlink::Error> {
    let mut route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(HOME_TABLE)
        .output_interface(ifindex)
        .build();
    route.attributes.push(RouteAttribute::Metrics(vec![
        RouteMetric::Lock(1 << RTAX_MTU),
        RouteMetric::Mtu(mtu),
    ]));
    handle.route().add(route).replace().execute().await?;
    ensure_rule(handle, INTERNAL_HOME, home).await
}

async fn ensure_rule(
    handle: &rtnetlink::Handle,
    table: Table,
    home: Ipv4Addr,
) -> Result<(), rtnetlink::Error> {
    if !home_rule_exists(handle, table, home).await? {
        handle
            .rule()
            .add()
            .v4()
            .source_prefix(home, 32)
            .table_id(table.id)
            .priority(table.priority)
            .action(RuleAction::ToTable)
            .execute()
            .await?;
    }
    Ok(())
}

/// Routes everything from `home` to the foreign agent `agent` on device `ifindex`: RFC 5944
/// §4.2.1, a mobile node registered through a foreign agent uses it as its default router (and
/// with a reverse tunnel it MUST, RFC 3024 §5.1). `onlink`: the node may have no address on
/// that link, the agent's address is reachable there all the same.
pub async fn route_home_via_agent(
    handle: &rtnetlink::Handle,
    table: Table,
    home: Ipv4Addr,
    ifindex: u32,
    agent: Ipv4Addr,
) -> Result<(), rtnetlink::Error> {
    let mut route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .table_id(table.id)
        .output_interface(ifindex)
        .gateway(agent)
        .build();
    route.header.flags |= netlink_packet_route::route::RouteFlags::Onlink;
    handle.route().add(route).replace().execute().await?;
    ensure_rule(handle, table, home).await
}

/// Removes the internal home address's rule (it is routed by the main table again) and table.
pub async fn unroute_home(handle: &rtnetlink::Handle) -> Result<(), rtnetlink::Error> {
    unroute(handle, INTERNAL_HOME).await
}

/// Removes `table`'s rule and routes.
pub async fn unroute(handle: &rtnetlink::Handle, table: Table) -> Result<(), rtnetlink::Error> {
    let mut rules = handle.rule().get(rtnetlink::IpVersion::V4).execute();
    let mut ours = Vec::new();
    while let Some(rule) = rules.try_next().await? {
        if is_ours(&rule, table) {
            ours.push(rule);
        }
    }
    for rule in ours {
        handle.rule().del(rule).execute().await?;
    }
    for route in routes_of(handle, table).await? {
        handle.route().del(route).execute().await?;
    }
    Ok(())
}

/// The routes in `table` (the kernel's dump filter is a hint: each is checked).
async fn routes_of(
    handle: &rtnetlink::Handle,
    table: Table,
) -> Result<Vec<netlink_packet_route::route::RouteMessage>, rtnetlink::Error> {
    let mut routes = handle
        .route()
        .get(
            rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                .table_id(table.id)
                .build(),
        )
        .execute();
    let mut found = Vec::new();
    while let Some(route) = routes.try_next().await? {
        if route.attributes.contains(&RouteAttribute::Table(table.id)) {
            found.push(route);
        }
    }
    Ok(found)
}

/// Whether `table` still holds a route. The kernel removes routes without telling their owner:
/// all those through a device when its last IPv4 address goes (`fib_disable_ip`), which an
/// XFRM interface whose only address is the TIA sees when that address is swapped.
pub async fn table_has_routes(
    handle: &rtnetlink::Handle,
    table: Table,
) -> Result<bool, rtnetlink::Error> {
    Ok(!routes_of(handle, table).await?.is_empty())
}

fn is_ours(rule: &netlink_packet_route::rule::RuleMessage, table: Table) -> bool {
    rule.attributes.contains(&RuleAttribute::Table(table.id))
        && rule
            .attributes
            .contains(&RuleAttribute::Priority(table.priority))
}

async fn home_rule_exists(
    handle: &rtnetlink::Handle,
    table: Table,
    home: Ipv4Addr,
) -> Result<bool, rtnetlink::Error> {
    let mut rules = handle.rule().get(rtnetlink::IpVersion::V4).execute();
    while let Some(rule) = rules.try_next().await? {
        if is_ours(&rule, table)
            && rule
                .attributes
                .contains(&RuleAttribute::Source(std::net::IpAddr::V4(home)))
        {
            return Ok(true);
        }
    }
    Ok(false)
}
