//! `m.room.member`'s `membership` as a type (client-server API "Room
//! membership"; the room version pages' auth rules use the same five).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Membership {
    Join,
    Invite,
    Leave,
    Ban,
    Knock,
}

impl Membership {
    /// The membership a string names; `None` for anything else (an event
    /// with an unknown membership counts as none).
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "join" => Self::Join,
            "invite" => Self::Invite,
            "leave" => Self::Leave,
            "ban" => Self::Ban,
            "knock" => Self::Knock,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Invite => "invite",
            Self::Leave => "leave",
            Self::Ban => "ban",
            Self::Knock => "knock",
        }
    }

    /// Whether the user is out of the room (left or banned).
    pub fn is_out(self) -> bool {
        matches!(self, Self::Leave | Self::Ban)
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberships_round_trip_and_unknown_ones_are_none() {
        for membership in [Membership::Join, Membership::Invite, Membership::Leave, Membership::Ban, Membership::Knock]
        {
            assert_eq!(Membership::parse(membership.as_str()), Some(membership));
        }
        assert_eq!(Membership::parse("JOIN"), None);
        assert_eq!(Membership::parse(""), None);
        assert!(Membership::Ban.is_out() && !Membership::Invite.is_out());
    }
}
