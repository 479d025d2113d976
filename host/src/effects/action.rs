//! A plugin's effects (plugin-api's `EFFECT_*` list) decoded into typed
//! [`Action`]s, and the checks that look at a call's effects as a whole:
//! its group names, its state changes.

use rohrpost_plugin_api::{
    abi::{
        Effect, EFFECT_CLOSE, EFFECT_CLOSE_WITH, EFFECT_GROUP_SEND, EFFECT_JOIN, EFFECT_LEAVE,
        EFFECT_SEND, EFFECT_SET,
    },
    GroupNameRule,
};
use rohrpost_protocol::is_json_object;

use crate::groups::{ConnectionId, MemoryGroups};

/// One effect of a handler, decoded and checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send this message to the caller.
    Send(String),
    /// Close the connection after what came before.
    Close,
    /// Add the caller to a group.
    Join(String),
    /// Remove the caller from a group.
    Leave(String),
    /// Send a message to every member of a group.
    GroupSend { group: String, message: String },
    /// Attach a value to the connection (carried out before the others,
    /// all of a call's at once: see [`state_changes`]).
    Set,
    /// Close with a code of the plugin's choosing.
    CloseWith { code: u16, reason: String },
}

/// Why an effect cannot be carried out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// A message to send that is not a JSON object.
    NotAnObject,
    /// An effect kind this host does not know (the plugin was built against
    /// a later 1.x).
    Unsupported(u32),
    /// A close code outside 4000-4999 and 1008, or a reason too long.
    BadClose,
}

impl Action {
    /// Decodes one ABI effect. Group names are checked for the whole call
    /// beforehand, by [`first_bad_group`].
    pub(crate) fn decode(effect: Effect) -> Result<Action, Unusable> {
        match effect.kind {
            EFFECT_SEND | EFFECT_GROUP_SEND if !is_json_object(effect.body.as_str()) => {
                Err(Unusable::NotAnObject)
            }
            EFFECT_SEND => Ok(Action::Send(effect.body.into_string())),
            EFFECT_CLOSE => Ok(Action::Close),
            EFFECT_JOIN => Ok(Action::Join(effect.target.into_string())),
            EFFECT_LEAVE => Ok(Action::Leave(effect.target.into_string())),
            EFFECT_GROUP_SEND => Ok(Action::GroupSend {
                group: effect.target.into_string(),
                message: effect.body.into_string(),
            }),
            EFFECT_SET => Ok(Action::Set),
            EFFECT_CLOSE_WITH => {
                let code = effect.target.as_str().parse::<u16>().ok();
                match code {
                    Some(code)
                        if (code == 1008 || (4000..=4999).contains(&code))
                            && effect.body.len() <= 123 =>
                    {
                        Ok(Action::CloseWith {
                            code,
                            reason: effect.body.into_string(),
                        })
                    }
                    _ => Err(Unusable::BadClose),
                }
            }
            other => Err(Unusable::Unsupported(other)),
        }
    }
}

/// The first group name among `effects` that breaks `rule`, and why.
pub(crate) fn first_bad_group(
    effects: &[Effect],
    rule: GroupNameRule,
) -> Option<rohrpost_plugin_api::GroupNameError> {
    effects
        .iter()
        .filter(|e| matches!(e.kind, EFFECT_JOIN | EFFECT_LEAVE | EFFECT_GROUP_SEND))
        .find_map(|e| rule.check(e.target.as_str()).err())
}

/// The state changes among a call's effects, in order.
pub(crate) fn state_changes(effects: &[Effect]) -> Vec<(&str, Option<&str>)> {
    effects
        .iter()
        .filter(|e| e.kind == EFFECT_SET)
        .map(|e| {
            let value = Some(e.body.as_str()).filter(|b| !b.is_empty());
            (e.target.as_str(), value)
        })
        .collect()
}

/// Whether carrying out `effects` in order would put `connection` in more
/// than `limit` groups (its groups on this host: `groups`).
pub(crate) fn joins_past(
    effects: &[Effect],
    groups: &MemoryGroups,
    connection: ConnectionId,
    limit: usize,
) -> bool {
    if !effects.iter().any(|e| e.kind == EFFECT_JOIN) {
        return false;
    }
    let mut count = groups.joined_by(connection);
    // Memberships this call changed, as they stand after its effects so far.
    let mut now: std::collections::HashMap<&str, bool> = Default::default();
    for effect in effects {
        let group = effect.target.as_str();
        let joins = match effect.kind {
            EFFECT_JOIN => true,
            EFFECT_LEAVE => false,
            _ => continue,
        };
        let member = *now
            .entry(group)
            .or_insert_with(|| groups.size_for(group, connection).1);
        match (joins, member) {
            (true, false) => count += 1,
            (false, true) => count -= 1,
            _ => {}
        }
        now.insert(group, joins);
        if count > limit {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn effect(kind: u32, target: &str, body: &str) -> Effect {
        Effect {
            kind,
            target: target.into(),
            body: body.into(),
        }
    }

    #[test]
    fn effects_decode_into_actions() {
        assert_eq!(
            Action::decode(effect(EFFECT_SEND, "", r#"{"type":"pong"}"#)),
            Ok(Action::Send(r#"{"type":"pong"}"#.to_owned()))
        );
        assert_eq!(
            Action::decode(effect(EFFECT_CLOSE, "", "bye")),
            Ok(Action::Close)
        );
        assert_eq!(
            Action::decode(effect(EFFECT_JOIN, "room", "")),
            Ok(Action::Join("room".to_owned()))
        );
        assert_eq!(
            Action::decode(effect(EFFECT_LEAVE, "room", "")),
            Ok(Action::Leave("room".to_owned()))
        );
        assert_eq!(
            Action::decode(effect(EFFECT_GROUP_SEND, "room", "{}")),
            Ok(Action::GroupSend {
                group: "room".to_owned(),
                message: "{}".to_owned()
            })
        );
    }

    #[test]
    fn messages_must_be_objects_and_kinds_known() {
        for body in ["[1]", "{", "\"x\"", ""] {
            assert_eq!(
                Action::decode(effect(EFFECT_SEND, "", body)),
                Err(Unusable::NotAnObject)
            );
            assert_eq!(
                Action::decode(effect(EFFECT_GROUP_SEND, "g", body)),
                Err(Unusable::NotAnObject)
            );
        }
        assert_eq!(
            Action::decode(effect(99, "", "{}")),
            Err(Unusable::Unsupported(99))
        );
    }

    #[test]
    fn one_bad_group_name_is_found_among_the_effects() {
        let rule = GroupNameRule::Channels;
        let fine = [
            effect(EFFECT_SEND, "not a group", "{}"),
            effect(EFFECT_JOIN, "room-1", ""),
        ];
        assert!(first_bad_group(&fine, rule).is_none());
        let bad = [
            effect(EFFECT_JOIN, "room-1", ""),
            effect(EFFECT_GROUP_SEND, "no spaces", "{}"),
        ];
        assert!(first_bad_group(&bad, rule).is_some());
    }

    #[tokio::test]
    async fn joins_are_counted_in_order_with_leaves_and_memberships() {
        use crate::groups::GroupLayer;
        let groups = MemoryGroups::default();
        let (outbox, _inbox) = crate::socket::outbound::outbound_queue(
            crate::socket::outbound::QueueLimits {
                messages: 8,
                bytes: 1 << 20,
            },
            Default::default(),
            None,
        );
        groups.join("a", 1, &outbox).await;
        groups.join("b", 1, &outbox).await;
        let join = |g: &str| effect(EFFECT_JOIN, g, "");
        let leave = |g: &str| effect(EFFECT_LEAVE, g, "");
        // In two groups, limit three.
        assert!(!joins_past(&[join("c")], &groups, 1, 3));
        assert!(joins_past(&[join("c"), join("d")], &groups, 1, 3));
        // Groups it is in, or joins twice, take no place.
        assert!(!joins_past(
            &[join("a"), join("c"), join("c")],
            &groups,
            1,
            3
        ));
        // A leave first makes room; after, it comes too late.
        assert!(!joins_past(
            &[leave("a"), join("c"), join("d")],
            &groups,
            1,
            3
        ));
        assert!(joins_past(
            &[join("c"), join("d"), leave("a")],
            &groups,
            1,
            3
        ));
        // Another connection's groups are its own.
        assert!(!joins_past(&[join("c"), join("d")], &groups, 2, 3));
    }
}
