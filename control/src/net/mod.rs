//! The shell's adapters to the outside world that are not sockets or eBPF: strongSwan's IKE
//! daemon over VICI ([`vici`]).

pub mod route;
pub mod vici;
pub mod xfrm;
