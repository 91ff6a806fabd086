//! The headers a dead letter carries: why it died and where it came from.
//! Every transport that dead-letters uses these names, and readers of a
//! `<topic>.dlq` find them here.

/// `delivery_limit` or `rejected` (see `DeadReason`).
pub const REASON: &str = "x-weir-dlq-reason";
/// What the rejecting consumer said.
pub const DETAIL: &str = "x-weir-dlq-detail";
pub const ORIGIN_TOPIC: &str = "x-weir-origin-topic";
pub const ORIGIN_PARTITION: &str = "x-weir-origin-partition";
pub const ORIGIN_OFFSET: &str = "x-weir-origin-offset";
pub const ORIGIN_GROUP: &str = "x-weir-origin-group";
/// The original publish time, milliseconds since the epoch.
pub const ORIGIN_TIMESTAMP: &str = "x-weir-origin-timestamp";
/// Deliveries the message had when it died.
pub const DELIVERY_COUNT: &str = "x-weir-delivery-count";

/// Every header above: what redrive strips to get the message back.
pub const ALL: [&str; 8] = [
    REASON,
    DETAIL,
    ORIGIN_TOPIC,
    ORIGIN_PARTITION,
    ORIGIN_OFFSET,
    ORIGIN_GROUP,
    ORIGIN_TIMESTAMP,
    DELIVERY_COUNT,
];

/// Whether `name` is one of the headers the queue adds to a dead letter.
pub fn is_dead_letter_header(name: &str) -> bool {
    ALL.contains(&name)
}
