//! Order events: the nested JSON document of `weir generate complex`.
//!
//! The shape, every field always present (the module docs of
//! [`crate::generate`] show a whole example):
//!
//! - `event_id` (`evt-000001`, counting up), `type` (`order.created`),
//!   `occurred_at` (RFC 3339, milliseconds, UTC);
//! - `order`: `id`, `status`, `customer` {`id`, `name`, `email`, `tier`,
//!   `address` {`street`, `city`, `postal_code`, `country`}}, `items`
//!   (1 to 5 of {`sku`, `name`, `quantity`, `unit_price`}), `total`,
//!   `payment` {`method`, `status`}, `shipping` {`method`, `promised_by`};
//! - `metadata`: a string map (`source`, `schema`, `trace_id`).
//!
//! Money is `{amount_cents, currency}`: integers, so totals add up exactly.
//! An order's total is the sum of its items' quantity × unit price.

use std::collections::BTreeMap;

use serde::Serialize;
use weir_telemetry::time::format_timestamp;

use crate::rng::Rng;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct OrderEvent {
    pub(crate) event_id: String,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) occurred_at: String,
    pub(crate) order: Order,
    pub(crate) metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Order {
    pub(crate) id: String,
    pub(crate) status: &'static str,
    pub(crate) customer: Customer,
    pub(crate) items: Vec<Item>,
    pub(crate) total: Money,
    pub(crate) payment: Payment,
    pub(crate) shipping: Shipping,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Customer {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) tier: &'static str,
    pub(crate) address: Address,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Address {
    pub(crate) street: String,
    pub(crate) city: &'static str,
    pub(crate) postal_code: String,
    pub(crate) country: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Item {
    pub(crate) sku: String,
    pub(crate) name: &'static str,
    pub(crate) quantity: u32,
    pub(crate) unit_price: Money,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Money {
    pub(crate) amount_cents: u64,
    pub(crate) currency: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Payment {
    pub(crate) method: &'static str,
    pub(crate) status: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Shipping {
    pub(crate) method: &'static str,
    pub(crate) promised_by: String,
}

const FIRST: [&str; 8] = [
    "Ana", "Bruno", "Chen", "Dara", "Elif", "Farid", "Greta", "Hugo",
];
const LAST: [&str; 8] = [
    "Souza", "Okafor", "Li", "Novak", "Yilmaz", "Haddad", "Lind", "Moreau",
];
/// City, country, currency.
const CITIES: [(&str, &str, &str); 5] = [
    ("Porto Alegre", "BR", "BRL"),
    ("Lisbon", "PT", "EUR"),
    ("Lyon", "FR", "EUR"),
    ("Toronto", "CA", "CAD"),
    ("Austin", "US", "USD"),
];
const STREETS: [&str; 5] = [
    "Rua das Flores",
    "Avenida da Liberdade",
    "Rue de la République",
    "King Street West",
    "Congress Avenue",
];
/// Name, base price in cents.
const PRODUCTS: [(&str, u64); 8] = [
    ("USB-C cable 2 m", 1_290),
    ("Mechanical keyboard", 8_900),
    ("27\" monitor", 24_900),
    ("Noise-cancelling headphones", 19_900),
    ("Laptop stand", 3_450),
    ("Webcam 1080p", 5_990),
    ("Desk lamp", 2_790),
    ("SSD 1 TB", 7_490),
];

/// Makes order events; a seed fixes every field but the times.
#[derive(Debug, Clone)]
pub(crate) struct Orders {
    rng: Rng,
    sequence: u64,
}

impl Orders {
    pub(crate) fn new(rng: Rng) -> Orders {
        Orders { rng, sequence: 0 }
    }

    /// The next event at `now_ms`, and its customer's id (the key).
    pub(crate) fn next(&mut self, now_ms: i64) -> (String, OrderEvent) {
        self.sequence += 1;
        let rng = &mut self.rng;
        let pick = |rng: &mut Rng, n: usize| rng.below(n as u64) as usize;
        let customer_no = 1 + rng.below(500);
        let (first, last) = (FIRST[pick(rng, 8)], LAST[pick(rng, 8)]);
        let (city, country, currency) = CITIES[pick(rng, CITIES.len())];
        let customer = Customer {
            id: format!("cus-{customer_no:05}"),
            name: format!("{first} {last}"),
            email: format!(
                "{}.{}@example.com",
                first.to_lowercase(),
                last.to_lowercase()
            ),
            tier: rng.weighted(&[("standard", 0.7), ("silver", 0.2), ("gold", 0.1)]),
            address: Address {
                street: format!(
                    "{} {}",
                    STREETS[pick(rng, STREETS.len())],
                    1 + rng.below(400)
                ),
                city,
                postal_code: format!("{:05}", rng.below(100_000)),
                country,
            },
        };
        // 1 to 5 different products: the first picks of a shuffle.
        let mut products: [usize; PRODUCTS.len()] = std::array::from_fn(|i| i);
        let lines = 1 + rng.below(5) as usize;
        for k in 0..lines {
            products.swap(k, k + pick(rng, PRODUCTS.len() - k));
        }
        let items: Vec<Item> = products[..lines]
            .iter()
            .map(|&p| {
                let (name, price) = PRODUCTS[p];
                Item {
                    sku: format!("SKU-{:05}", 10_000 + p * 137),
                    name,
                    quantity: 1 + rng.below(3) as u32,
                    unit_price: Money {
                        amount_cents: price,
                        currency,
                    },
                }
            })
            .collect();
        let total = Money {
            amount_cents: items
                .iter()
                .map(|i| u64::from(i.quantity) * i.unit_price.amount_cents)
                .sum(),
            currency,
        };
        let express = rng.chance(0.3);
        let days = if express { 1 } else { 2 + rng.below(5) as i64 };
        let trace = format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
        let order = Order {
            id: format!("ord-{:08x}", rng.next_u64() >> 32),
            status: "created",
            customer,
            items,
            total,
            payment: Payment {
                method: rng.weighted(&[("card", 0.7), ("pix", 0.15), ("paypal", 0.15)]),
                status: "authorized",
            },
            shipping: Shipping {
                method: if express { "express" } else { "standard" },
                promised_by: format_timestamp(now_ms + days * 86_400_000),
            },
        };
        let metadata = BTreeMap::from([
            ("source".to_string(), "weir-generate".to_string()),
            ("schema".to_string(), "order-event/v1".to_string()),
            ("trace_id".to_string(), trace),
        ]);
        let key = order.customer.id.clone();
        let event = OrderEvent {
            event_id: format!("evt-{:06}", self.sequence),
            kind: "order.created",
            occurred_at: format_timestamp(now_ms),
            order,
            metadata,
        };
        (key, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_and_keys_are_customers() {
        let mut orders = Orders::new(Rng::new(3, 0));
        for i in 0..200 {
            let (key, event) = orders.next(1_700_000_000_000 + i);
            let o = &event.order;
            assert_eq!(key, o.customer.id);
            assert!((1..=5).contains(&o.items.len()));
            let skus: std::collections::BTreeSet<&str> =
                o.items.iter().map(|i| i.sku.as_str()).collect();
            assert_eq!(skus.len(), o.items.len(), "each product once per order");
            let sum: u64 = o
                .items
                .iter()
                .map(|i| u64::from(i.quantity) * i.unit_price.amount_cents)
                .sum();
            assert_eq!(o.total.amount_cents, sum);
            assert!(
                o.items
                    .iter()
                    .all(|i| i.unit_price.currency == o.total.currency)
            );
            assert_eq!(event.event_id, format!("evt-{:06}", i + 1));
        }
    }
}
