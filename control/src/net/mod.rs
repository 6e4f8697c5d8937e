//! The shell's adapters to the kernel and to other daemons: link-layer frames for agent
//! discovery and a foreign agent ([`link`], [`agent_link`]), routes ([`route`]), interfaces
//! ([`iface`]), socket options ([`sockopt`]), gratuitous ARP ([`garp`]), the per-socket IPsec
//! bypass ([`xfrm`]), strongSwan's IKE daemon over VICI ([`vici`]) and the clocks ([`clock`]).

pub mod agent_link;
pub mod clock;
pub mod garp;
pub mod iface;
pub mod link;
pub mod route;
pub mod sockopt;
pub mod vici;
pub mod xfrm;
