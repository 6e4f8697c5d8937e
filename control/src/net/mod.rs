//! The shell's adapters to the outside world that are not sockets or eBPF: strongSwan's IKE
//! daemon over VICI ([`vici`]), link-layer frames for agent discovery and a foreign agent
//! ([`link`]).

pub mod link;
pub mod route;
pub mod vici;
pub mod xfrm;
