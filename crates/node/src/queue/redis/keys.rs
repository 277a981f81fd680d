//! Halibut's names for the keys and channels of its Redis queue, so that a
//! `redis-cli MONITOR` of an octopoll cluster reads like a real one:
//! `<prefix>:HalibutRedis:<kind>:octopus::server::halibut::<Name>::<endpoint>[::<guid>]`,
//! the endpoint being the subscription's `poll://…/` and the guid the request's
//! activity id.

use octopoll_wire::SubscriptionId;
use uuid::Uuid;

/// Which side of a request a heartbeat comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    /// The node whose caller queued the request.
    Sender,
    /// The node whose Tentacle connection collected it.
    Processor,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Sender => "RequestSenderNode",
            Role::Processor => "RequestProcessorNode",
        }
    }
}

/// Key and channel names under one prefix.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    base: String,
}

impl Keys {
    /// Names under `<prefix>:HalibutRedis`.
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            base: format!("{prefix}:HalibutRedis"),
        }
    }

    fn name(&self, kind: &str, parts: &[&str]) -> String {
        let mut name = format!("{}:{kind}:octopus::server::halibut", self.base);
        for part in parts {
            name.push_str("::");
            name.push_str(part);
        }
        name
    }

    /// The list of request guids waiting for `subscription`.
    pub(super) fn pending(&self, subscription: &SubscriptionId) -> String {
        self.name("list", &["PendingRequestGuidsQueue", subscription.as_str()])
    }

    /// The hash holding one queued request.
    pub(super) fn request(&self, subscription: &SubscriptionId, guid: Uuid) -> String {
        let guid = guid.to_string();
        self.name("hash", &["RequestMessage", subscription.as_str(), &guid])
    }

    /// The hash holding one request's response.
    pub(super) fn response(&self, subscription: &SubscriptionId, guid: Uuid) -> String {
        let guid = guid.to_string();
        self.name("hash", &["Response", subscription.as_str(), &guid])
    }

    /// The channel that says a request was queued for `subscription`.
    pub(super) fn request_pulse(&self, subscription: &SubscriptionId) -> String {
        self.name(
            "channel",
            &["RequestMessagesPulseChannel", subscription.as_str()],
        )
    }

    /// The channel that says one request's response is stored.
    pub(super) fn response_pulse(&self, subscription: &SubscriptionId, guid: Uuid) -> String {
        let guid = guid.to_string();
        self.name(
            "channel",
            &["ResponseAvailableChannel", subscription.as_str(), &guid],
        )
    }

    /// The channel `role` heartbeats on while one request is in its hands.
    pub(super) fn heartbeat(
        &self,
        subscription: &SubscriptionId,
        guid: Uuid,
        role: Role,
    ) -> String {
        let guid = guid.to_string();
        self.name(
            "channel",
            &[
                "NodeHeartBeatChannel",
                subscription.as_str(),
                &guid,
                role.name(),
            ],
        )
    }

    /// A node's data-loss canary (outside Halibut's `octopus::server::halibut` names, as in Halibut).
    pub(super) fn canary(&self, guid: Uuid) -> String {
        format!("{}:string:WatchForDataLoss::{guid}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_halibuts_layout() {
        let keys = Keys::new("octopoll-demo");
        let subscription: SubscriptionId = "poll://abcdefghjkmnpqrstuvw/".parse().unwrap();
        let guid: Uuid = "3f2504e0-4f89-41d3-9a0c-0305e82c3301".parse().unwrap();
        let e = "poll://abcdefghjkmnpqrstuvw/";
        let g = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
        let p = "octopoll-demo:HalibutRedis";
        let h = "octopus::server::halibut";
        assert_eq!(
            keys.pending(&subscription),
            format!("{p}:list:{h}::PendingRequestGuidsQueue::{e}")
        );
        assert_eq!(
            keys.request(&subscription, guid),
            format!("{p}:hash:{h}::RequestMessage::{e}::{g}")
        );
        assert_eq!(
            keys.response(&subscription, guid),
            format!("{p}:hash:{h}::Response::{e}::{g}")
        );
        assert_eq!(
            keys.request_pulse(&subscription),
            format!("{p}:channel:{h}::RequestMessagesPulseChannel::{e}")
        );
        assert_eq!(
            keys.response_pulse(&subscription, guid),
            format!("{p}:channel:{h}::ResponseAvailableChannel::{e}::{g}")
        );
        assert_eq!(
            keys.heartbeat(&subscription, guid, Role::Processor),
            format!("{p}:channel:{h}::NodeHeartBeatChannel::{e}::{g}::RequestProcessorNode")
        );
        assert_eq!(
            keys.canary(guid),
            format!("{p}:string:WatchForDataLoss::{g}")
        );
    }
}
