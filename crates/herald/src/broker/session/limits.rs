//! A link's quota checks (`broker::quota`): what its tenant's settings and its own limits
//! allow each PUBLISH and each subscription. Breaches are counted on the tenant.

use std::time::Duration;

use mqtt_codec::{Publish, QoS, ReasonCode};

use super::closing::Closing;
use super::link::Link;
use crate::broker::quota::Breach;
use crate::config::RateExceeded;

/// What the rates make of a PUBLISH.
pub(super) enum Rated {
    /// Within them.
    Within,
    /// Over: accepted, and the connection reads nothing more for this long.
    Throttle(Duration),
    /// Over: refused with 0x97 Quota exceeded (0x96 Message rate too high is a DISCONNECT
    /// code, which PUBACK may not carry).
    Refuse,
}

impl Link {
    /// The link's QoS, retain and payload quotas for `p`: a QoS or retain flag its CONNACK
    /// said it does not take breaks the protocol (closes); a payload past its tenant's
    /// limit is refused (`Some(0x97)`).
    pub(super) fn quota_publish(&mut self, p: &Publish) -> Result<Option<ReasonCode>, Closing> {
        let Some(q) = &self.quota else {
            return Ok(None);
        };
        if q.max_qos.is_some_and(|max| p.qos as u8 > max) {
            return Err(self.violation(ReasonCode::QoSNotSupported, "[MQTT-3.2.2-11]"));
        }
        if p.retain && q.retain == Some(false) {
            return Err(self.violation(ReasonCode::RetainNotSupported, "[MQTT-3.2.2-14]"));
        }
        if q.max_payload
            .is_some_and(|max| p.payload.len() > max as usize)
        {
            self.tenant.usage.breach(Breach::Payload);
            return Ok(Some(ReasonCode::QuotaExceeded));
        }
        Ok(None)
    }

    /// Takes a PUBLISH of `bytes` from the connection's and the tenant's rates.
    pub(super) fn rate(&self, bytes: usize) -> Rated {
        let bytes = bytes as u64;
        let cfg = self.broker.config();
        // Throttled, the message is accepted: every rate takes it. Refused, none does.
        let pay = cfg.tenants.rate_exceeded == RateExceeded::Throttle;
        let own = self
            .quota
            .as_ref()
            .and_then(|q| q.rates.as_ref())
            .and_then(|r| r.publish(bytes, pay));
        let tenant = if own.is_some() && !pay {
            None
        } else {
            let tenant_own = self.tenant.own();
            self.tenant
                .rates
                .current(&tenant_own, &cfg.tenants.defaults)
                .and_then(|rates| rates.publish(bytes, pay))
        };
        let over = crate::broker::quota::longer(own, tenant);
        let Some((breach, wait)) = over else {
            return Rated::Within;
        };
        self.tenant.usage.breach(breach);
        match cfg.tenants.rate_exceeded {
            RateExceeded::Throttle => Rated::Throttle(wait),
            RateExceeded::Refuse => Rated::Refuse,
        }
    }

    /// What one pump may take for the client under its tenant's outbound rate: a tenth of
    /// a second's worth (at least one delivery is taken whatever its size); `None` when
    /// the tenant has no outbound rate.
    pub fn outbound_budget(&self) -> Option<usize> {
        let rate = self.tenant.rates.outbound_rate(|| {
            let cfg = self.broker.config();
            self.tenant
                .own()
                .outbound_bytes_per_sec
                .or(cfg.tenants.defaults.outbound_bytes_per_sec)
        })?;
        Some(usize::try_from(rate / 10).unwrap_or(usize::MAX).max(1))
    }

    /// Takes `bytes` just made ready for the client from its tenant's outbound rate: `None`
    /// within it, else how long the connection writes nothing more (a breach, counted).
    pub fn outbound_rate(&self, bytes: usize) -> Option<Duration> {
        if bytes == 0 {
            return None;
        }
        let cfg = self.broker.config();
        let own = self.tenant.own();
        own.outbound_bytes_per_sec
            .or(cfg.tenants.defaults.outbound_bytes_per_sec)?;
        let rates = self.tenant.rates.current(&own, &cfg.tenants.defaults)?;
        let wait = rates.outbound(bytes as u64)?;
        self.tenant.usage.breach(Breach::OutboundRate);
        Some(wait)
    }

    /// The highest QoS the link may be granted.
    pub(super) fn granted_qos(&self, node: QoS) -> QoS {
        match self.quota.as_ref().and_then(|q| q.max_qos) {
            Some(max) => QoS::from_u8(max).map_or(node, |max| max.min(node)),
            None => node,
        }
    }

    /// The tenant's and the link's subscription quotas for `filter`: `Some(code)` refuses
    /// it (0xA2 wildcards, 0x9E shared subscriptions not supported, 0x97 quota exceeded).
    pub(super) fn quota_subscribe(&self, filter: &str) -> Option<ReasonCode> {
        let cfg = self.broker.config();
        let defaults = &cfg.tenants.defaults;
        let own = self.tenant.own();
        let (group, inner) = match mqtt_codec::topic::parse_shared(filter) {
            Ok(Some(shared)) => (Some(shared.group), shared.filter),
            _ => (None, filter),
        };
        let refuse = |breach: Breach, code: ReasonCode| {
            self.tenant.usage.breach(breach);
            Some(code)
        };
        if own.wildcards.or(defaults.wildcards) == Some(false)
            && mqtt_codec::topic::has_wildcards(inner)
        {
            return refuse(
                Breach::Wildcards,
                ReasonCode::WildcardSubscriptionsNotSupported,
            );
        }
        if group.is_some()
            && own.shared_subscriptions.or(defaults.shared_subscriptions) == Some(false)
        {
            return refuse(
                Breach::SharedSubscriptions,
                ReasonCode::SharedSubscriptionsNotSupported,
            );
        }
        let (held, count) = {
            let st = self.session.lock();
            (
                st.subscriptions.contains_key(filter),
                st.subscriptions.len(),
            )
        };
        if held {
            return None;
        }
        let per_client = self.quota.as_ref().and_then(|q| q.max_subscriptions);
        if per_client.is_some_and(|max| count as u64 >= max) {
            return refuse(Breach::SubscriptionsPerClient, ReasonCode::QuotaExceeded);
        }
        if let Some(max) = own.max_subscriptions.or(defaults.max_subscriptions)
            && self.tenant.index.len() as u64 >= max
        {
            return refuse(Breach::Subscriptions, ReasonCode::QuotaExceeded);
        }
        if let (Some(group), Some(max)) = (
            group,
            own.max_shared_members.or(defaults.max_shared_members),
        ) && self.tenant.index.group_size(inner, group) as u64 >= max
        {
            return refuse(Breach::SharedMembers, ReasonCode::QuotaExceeded);
        }
        None
    }
}
