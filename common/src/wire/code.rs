//! Registration Reply codes (RFC 5944 §3.4; RFC 3024 §3.3; RFC 2794 §5; RFC 3519 §3.5).

/// The Code field of a Registration Reply. Unknown values round-trip through `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReplyCode {
    /// 0: registration accepted.
    Accepted,
    /// 1: accepted, but simultaneous mobility bindings unsupported.
    AcceptedNoSimultaneousBindings,
    // Denied by the foreign agent (RFC 5944 §3.4).
    FaUnspecified,
    FaAdminProhibited,
    FaInsufficientResources,
    FaMobileNodeFailedAuth,
    FaHomeAgentFailedAuth,
    FaLifetimeTooLong,
    FaPoorlyFormedRequest,
    FaPoorlyFormedReply,
    FaEncapsulationUnavailable,
    FaReservedUnavailable,
    /// 74 (RFC 3024): requested reverse tunnel unavailable.
    FaReverseTunnelUnavailable,
    /// 75 (RFC 3024): reverse tunnel is mandatory and 'T' bit not set.
    FaReverseTunnelMandatory,
    /// 76 (RFC 3024): mobile node too distant.
    FaMobileNodeTooDistant,
    FaInvalidCareOfAddress,
    FaRegistrationTimeout,
    /// 79 (RFC 3024): delivery style not supported.
    FaDeliveryStyleUnsupported,
    FaHomeNetworkUnreachable,
    FaHomeAgentHostUnreachable,
    FaHomeAgentPortUnreachable,
    FaHomeAgentUnreachable,
    /// 194: invalid home agent address.
    FaInvalidHomeAgentAddress,
    // Denied by the home agent (RFC 5944 §3.4).
    HaUnspecified,
    HaAdminProhibited,
    HaInsufficientResources,
    HaMobileNodeFailedAuth,
    HaForeignAgentFailedAuth,
    HaIdentificationMismatch,
    HaPoorlyFormedRequest,
    HaTooManyBindings,
    HaUnknownHomeAgentAddress,
    /// 137 (RFC 3024): requested reverse tunnel unavailable.
    HaReverseTunnelUnavailable,
    /// 138 (RFC 3024): reverse tunnel is mandatory and 'T' bit not set.
    HaReverseTunnelMandatory,
    /// 139 (RFC 3024): requested encapsulation unavailable.
    HaEncapsulationUnavailable,
    /// 142 (RFC 3519 §3.5, ERROR_HA_UDP_ENCAP_UNAVAIL as assigned by IANA): requested UDP
    /// tunnel encapsulation unavailable.
    HaUdpEncapUnavailable,
    Unknown(u8),
}

macro_rules! codes {
    ($($variant:ident = $value:literal),* $(,)?) => {
        impl From<u8> for ReplyCode {
            fn from(v: u8) -> Self {
                match v {
                    $($value => ReplyCode::$variant,)*
                    other => ReplyCode::Unknown(other),
                }
            }
        }
        impl From<ReplyCode> for u8 {
            fn from(c: ReplyCode) -> u8 {
                match c {
                    $(ReplyCode::$variant => $value,)*
                    ReplyCode::Unknown(other) => other,
                }
            }
        }
    };
}

codes! {
    Accepted = 0,
    AcceptedNoSimultaneousBindings = 1,
    FaUnspecified = 64,
    FaAdminProhibited = 65,
    FaInsufficientResources = 66,
    FaMobileNodeFailedAuth = 67,
    FaHomeAgentFailedAuth = 68,
    FaLifetimeTooLong = 69,
    FaPoorlyFormedRequest = 70,
    FaPoorlyFormedReply = 71,
    FaEncapsulationUnavailable = 72,
    FaReservedUnavailable = 73,
    FaReverseTunnelUnavailable = 74,
    FaReverseTunnelMandatory = 75,
    FaMobileNodeTooDistant = 76,
    FaInvalidCareOfAddress = 77,
    FaRegistrationTimeout = 78,
    FaDeliveryStyleUnsupported = 79,
    FaHomeNetworkUnreachable = 80,
    FaHomeAgentHostUnreachable = 81,
    FaHomeAgentPortUnreachable = 82,
    FaHomeAgentUnreachable = 88,
    FaInvalidHomeAgentAddress = 194,
    HaUnspecified = 128,
    HaAdminProhibited = 129,
    HaInsufficientResources = 130,
    HaMobileNodeFailedAuth = 131,
    HaForeignAgentFailedAuth = 132,
    HaIdentificationMismatch = 133,
    HaPoorlyFormedRequest = 134,
    HaTooManyBindings = 135,
    HaUnknownHomeAgentAddress = 136,
    HaReverseTunnelUnavailable = 137,
    HaReverseTunnelMandatory = 138,
    HaEncapsulationUnavailable = 139,
    HaUdpEncapUnavailable = 142,
}

impl ReplyCode {
    /// Codes 0 and 1 accept the registration (RFC 5944 §3.4).
    pub fn is_accepted(self) -> bool {
        matches!(u8::from(self), 0 | 1)
    }

    /// A short human-readable description, for logs and `mipctl`.
    pub fn description(self) -> &'static str {
        use ReplyCode::*;
        match self {
            Accepted => "registration accepted",
            AcceptedNoSimultaneousBindings => "accepted, simultaneous bindings unsupported",
            FaUnspecified | HaUnspecified => "reason unspecified",
            FaAdminProhibited | HaAdminProhibited => "administratively prohibited",
            FaInsufficientResources | HaInsufficientResources => "insufficient resources",
            FaMobileNodeFailedAuth | HaMobileNodeFailedAuth => "mobile node failed authentication",
            FaHomeAgentFailedAuth => "home agent failed authentication",
            HaForeignAgentFailedAuth => "foreign agent failed authentication",
            FaLifetimeTooLong => "requested lifetime too long",
            FaPoorlyFormedRequest | HaPoorlyFormedRequest => "poorly formed request",
            FaPoorlyFormedReply => "poorly formed reply",
            FaEncapsulationUnavailable | HaEncapsulationUnavailable => {
                "requested encapsulation unavailable"
            }
            FaReservedUnavailable => "reserved and unavailable",
            FaReverseTunnelUnavailable | HaReverseTunnelUnavailable => {
                "requested reverse tunnel unavailable"
            }
            FaReverseTunnelMandatory | HaReverseTunnelMandatory => {
                "reverse tunnel is mandatory and 'T' bit not set"
            }
            FaMobileNodeTooDistant => "mobile node too distant",
            FaInvalidCareOfAddress => "invalid care-of address",
            FaRegistrationTimeout => "registration timeout",
            FaDeliveryStyleUnsupported => "delivery style not supported",
            FaHomeNetworkUnreachable => "home network unreachable",
            FaHomeAgentHostUnreachable => "home agent host unreachable",
            FaHomeAgentPortUnreachable => "home agent port unreachable",
            FaHomeAgentUnreachable => "home agent unreachable",
            FaInvalidHomeAgentAddress => "invalid home agent address",
            HaIdentificationMismatch => "registration identification mismatch",
            HaTooManyBindings => "too many simultaneous mobility bindings",
            HaUnknownHomeAgentAddress => "unknown home agent address",
            HaUdpEncapUnavailable => "requested UDP tunnel encapsulation unavailable",
            Unknown(_) => "unknown code",
        }
    }
}

impl core::fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", u8::from(*self), self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(ReplyCode::from(v)), v);
        }
    }

    #[test]
    fn rfc_values() {
        assert_eq!(ReplyCode::from(131), ReplyCode::HaMobileNodeFailedAuth);
        assert_eq!(ReplyCode::from(133), ReplyCode::HaIdentificationMismatch);
        assert!(ReplyCode::from(1).is_accepted());
        assert!(!ReplyCode::from(64).is_accepted());
        assert_eq!(ReplyCode::from(200), ReplyCode::Unknown(200));
    }
}
