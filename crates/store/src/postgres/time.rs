//! [`Millis`]: Weir's times (milliseconds since the Unix epoch) as
//! `TIMESTAMPTZ`, exactly. On the wire a `TIMESTAMPTZ` is microseconds
//! since 2000-01-01 UTC (binary format), so the conversion is integer
//! arithmetic, checked, with no floating point and no time zone.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, accepts, to_sql_checked};

/// 2000-01-01T00:00:00Z in milliseconds since the Unix epoch.
const PG_EPOCH_MS: i64 = 946_684_800_000;

/// A time in milliseconds since the Unix epoch, read and written as
/// `TIMESTAMPTZ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Millis(pub(crate) i64);

impl Millis {
    fn to_micros(self) -> Option<i64> {
        self.0.checked_sub(PG_EPOCH_MS)?.checked_mul(1_000)
    }

    fn from_micros(micros: i64) -> Millis {
        // Floor, should a time not written by Weir have a fraction of a
        // millisecond. Cannot overflow: |micros / 1000| is far below
        // i64::MAX - PG_EPOCH_MS (even for ±infinity, stored as i64::MAX
        // and i64::MIN).
        Millis(micros.div_euclid(1_000) + PG_EPOCH_MS)
    }
}

impl ToSql for Millis {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let micros = self
            .to_micros()
            .ok_or_else(|| format!("time {} ms is out of PostgreSQL's range", self.0))?;
        out.put_i64(micros);
        Ok(IsNull::No)
    }

    accepts!(TIMESTAMPTZ);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for Millis {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Millis, Box<dyn Error + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("a TIMESTAMPTZ of {} bytes, not 8", raw.len()))?;
        Ok(Millis::from_micros(i64::from_be_bytes(bytes)))
    }

    accepts!(TIMESTAMPTZ);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(ms: i64) -> i64 {
        let mut buf = BytesMut::new();
        Millis(ms)
            .to_sql(&Type::TIMESTAMPTZ, &mut buf)
            .expect("in range");
        Millis::from_sql(&Type::TIMESTAMPTZ, &buf)
            .expect("8 bytes")
            .0
    }

    #[test]
    fn times_survive_exactly() {
        for ms in [
            0,
            1,
            -1,
            999,
            -999,
            PG_EPOCH_MS,
            1_752_871_354_123,
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z
            -62_135_596_800_000, // 0001-01-01T00:00:00Z
        ] {
            assert_eq!(round_trip(ms), ms);
        }
    }

    #[test]
    fn the_wire_format_is_microseconds_since_2000() {
        let mut buf = BytesMut::new();
        Millis(PG_EPOCH_MS + 1)
            .to_sql(&Type::TIMESTAMPTZ, &mut buf)
            .expect("in range");
        assert_eq!(&buf[..], &1_000i64.to_be_bytes());
        assert_eq!(Millis::from_micros(-1), Millis(PG_EPOCH_MS - 1), "floor");
        assert_eq!(Millis::from_micros(1_999), Millis(PG_EPOCH_MS + 1));
    }

    #[test]
    fn out_of_range_is_an_error_not_a_wrap() {
        let mut buf = BytesMut::new();
        assert!(
            Millis(i64::MAX)
                .to_sql(&Type::TIMESTAMPTZ, &mut buf)
                .is_err()
        );
        assert!(
            Millis(i64::MIN)
                .to_sql(&Type::TIMESTAMPTZ, &mut buf)
                .is_err()
        );
        let _ = Millis::from_micros(i64::MAX);
        let _ = Millis::from_micros(i64::MIN);
    }
}
