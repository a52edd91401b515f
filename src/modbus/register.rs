//! Registers → numbers: data types, word and byte order, scale and offset,
//! bit fields, and counters read as increments.

/// The four Modbus data tables (the source only reads them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Function 1 (read coils), one bit each.
    Coil,
    /// Function 2 (read discrete inputs), one bit each.
    Discrete,
    /// Function 3 (read holding registers), 16 bits each.
    Holding,
    /// Function 4 (read input registers), 16 bits each.
    Input,
}

impl Table {
    pub const NAMES: &'static [&'static str] = &["holding", "input", "coil", "discrete"];

    pub fn parse(s: &str) -> Option<Table> {
        Some(match s {
            "holding" => Table::Holding,
            "input" => Table::Input,
            "coil" => Table::Coil,
            "discrete" => Table::Discrete,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Holding => "holding",
            Table::Input => "input",
            Table::Coil => "coil",
            Table::Discrete => "discrete",
        }
    }

    /// Bits rather than 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// The most a single read may ask for (Modbus application protocol
    /// v1.1b3: 125 registers, 2000 bits).
    pub fn max_read(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }
}

/// What a register (or run of registers) holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    F32,
    U64,
    I64,
    F64,
}

impl DataType {
    pub const NAMES: &'static [&'static str] = &[
        "u16", "i16", "u32", "i32", "f32", "u64", "i64", "f64", "bool",
    ];

    pub fn parse(s: &str) -> Option<DataType> {
        Some(match s {
            "bool" => DataType::Bool,
            "u16" => DataType::U16,
            "i16" => DataType::I16,
            "u32" => DataType::U32,
            "i32" => DataType::I32,
            "f32" => DataType::F32,
            "u64" => DataType::U64,
            "i64" => DataType::I64,
            "f64" => DataType::F64,
            _ => return None,
        })
    }

    /// Registers (or bits) it takes.
    pub fn words(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }

    /// The range an unsigned integer counter wraps at.
    pub fn wraps_at(self) -> Option<f64> {
        match self {
            DataType::U16 => Some(65_536.0),
            DataType::U32 => Some(4_294_967_296.0),
            DataType::U64 => Some(18_446_744_073_709_551_616.0),
            _ => None,
        }
    }
}

/// Byte order of a multi-register value, in the letters vendors' manuals
/// use: `ABCD` is big-endian throughout (the Modbus default), `CDAB` swaps
/// the words (low word first), `BADC` swaps the bytes in each word, `DCBA`
/// is little-endian throughout. For 64-bit values the same rule holds per
/// word (`CDAB` = the four words in reverse order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Order {
    pub low_word_first: bool,
    pub swap_bytes: bool,
}

impl Order {
    pub const NAMES: &'static [&'static str] = &["ABCD", "CDAB", "BADC", "DCBA"];
    pub const BIG: Order = Order {
        low_word_first: false,
        swap_bytes: false,
    };

    pub fn parse(s: &str) -> Option<Order> {
        let (low_word_first, swap_bytes) = match s {
            "ABCD" => (false, false),
            "CDAB" => (true, false),
            "BADC" => (false, true),
            "DCBA" => (true, true),
            _ => return None,
        };
        Some(Order {
            low_word_first,
            swap_bytes,
        })
    }
}

/// How one tag is read from its registers.
#[derive(Clone, Debug, PartialEq)]
pub struct Decode {
    pub kind: DataType,
    pub order: Order,
    pub scale: f64,
    pub offset: f64,
    /// A single bit of a 16-bit register (0 = least significant).
    pub bit: Option<u8>,
    /// A counter: samples are the increase since the previous poll (scaled),
    /// unwrapped at this raw value (the type's range by default).
    pub rollover: Option<f64>,
}

impl Decode {
    pub fn plain(kind: DataType) -> Decode {
        Decode {
            kind,
            order: Order::BIG,
            scale: 1.0,
            offset: 0.0,
            bit: None,
            rollover: None,
        }
    }

    /// The raw number in `words` (as many as the type takes), before
    /// scale and offset.
    pub fn raw(&self, words: &[u16]) -> f64 {
        if let Some(b) = self.bit {
            return f64::from((words[0] >> b) & 1);
        }
        let n = self.kind.words() as usize;
        let mut be = [0u8; 8];
        for i in 0..n {
            let w = if self.order.low_word_first {
                words[n - 1 - i]
            } else {
                words[i]
            };
            let w = if self.order.swap_bytes {
                w.swap_bytes()
            } else {
                w
            };
            be[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
        }
        let b2 = [be[0], be[1]];
        let b4 = [be[0], be[1], be[2], be[3]];
        match self.kind {
            DataType::Bool => f64::from(u8::from(words[0] != 0)),
            DataType::U16 => f64::from(u16::from_be_bytes(b2)),
            DataType::I16 => f64::from(i16::from_be_bytes(b2)),
            DataType::U32 => f64::from(u32::from_be_bytes(b4)),
            DataType::I32 => f64::from(i32::from_be_bytes(b4)),
            DataType::F32 => f64::from(f32::from_be_bytes(b4)),
            DataType::U64 => u64::from_be_bytes(be) as f64,
            DataType::I64 => i64::from_be_bytes(be) as f64,
            DataType::F64 => f64::from_be_bytes(be),
        }
    }

    /// The engineering value of a raw number.
    pub fn value(&self, raw: f64) -> f64 {
        raw * self.scale + self.offset
    }
}

/// What a counter's new reading means.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// The first reading: nothing to compare with yet.
    First,
    /// The raw increase since the previous reading.
    Increase(f64),
    /// The counter went down by more than a rollover explains (a meter
    /// reset or replaced): counting starts again from this reading.
    Reset,
}

/// The step from `prev` to `now` of a counter that wraps at `range`. A
/// decrease is a rollover only if the unwrapped increase is under half
/// the range; a larger one is a reset.
pub fn counter_step(prev: Option<f64>, now: f64, range: f64) -> Step {
    let Some(prev) = prev else {
        return Step::First;
    };
    if now >= prev {
        return Step::Increase(now - prev);
    }
    let wrapped = now + range - prev;
    if wrapped < range / 2.0 {
        Step::Increase(wrapped)
    } else {
        Step::Reset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(kind: DataType, order: &str) -> Decode {
        Decode {
            order: Order::parse(order).unwrap(),
            ..Decode::plain(kind)
        }
    }

    // Hand-computed: 1234.5f32 = 0x449A5000.
    #[test]
    fn f32_in_every_order() {
        assert_eq!(d(DataType::F32, "ABCD").raw(&[0x449A, 0x5000]), 1234.5);
        assert_eq!(d(DataType::F32, "CDAB").raw(&[0x5000, 0x449A]), 1234.5);
        assert_eq!(d(DataType::F32, "BADC").raw(&[0x9A44, 0x0050]), 1234.5);
        assert_eq!(d(DataType::F32, "DCBA").raw(&[0x0050, 0x9A44]), 1234.5);
    }

    // -123456 = 0xFFFE1DC0; 2^40 + 5 = 0x0000_0100_0000_0005; -2.5f64 = 0xC004_0000_0000_0000.
    #[test]
    fn integers_and_doubles() {
        assert_eq!(d(DataType::I32, "ABCD").raw(&[0xFFFE, 0x1DC0]), -123456.0);
        assert_eq!(d(DataType::I32, "CDAB").raw(&[0x1DC0, 0xFFFE]), -123456.0);
        assert_eq!(
            d(DataType::U32, "ABCD").raw(&[0xFFFE, 0x1DC0]),
            4294843840.0
        );
        assert_eq!(
            d(DataType::U64, "ABCD").raw(&[0x0000, 0x0100, 0x0000, 0x0005]),
            1099511627781.0
        );
        assert_eq!(
            d(DataType::U64, "CDAB").raw(&[0x0005, 0x0000, 0x0100, 0x0000]),
            1099511627781.0
        );
        assert_eq!(d(DataType::F64, "ABCD").raw(&[0xC004, 0, 0, 0]), -2.5);
        assert_eq!(d(DataType::F64, "DCBA").raw(&[0, 0, 0, 0x04C0]), -2.5);
        assert_eq!(d(DataType::I16, "ABCD").raw(&[0xFF38]), -200.0);
        assert_eq!(d(DataType::I16, "BADC").raw(&[0x38FF]), -200.0);
        assert_eq!(d(DataType::U16, "ABCD").raw(&[0xFF38]), 65336.0);
    }

    #[test]
    fn scale_offset_and_bits() {
        let mut s = Decode::plain(DataType::U16);
        s.scale = 0.1;
        s.offset = -40.0;
        assert!((s.value(s.raw(&[2345])) - 194.5).abs() < 1e-9);
        let mut b = Decode::plain(DataType::U16);
        b.bit = Some(3);
        assert_eq!(b.raw(&[0b1000]), 1.0);
        assert_eq!(b.raw(&[0b0111]), 0.0);
        b.bit = Some(15);
        assert_eq!(b.raw(&[0x8000]), 1.0);
    }

    #[test]
    fn counters_roll_over_and_reset() {
        let r = 65_536.0;
        assert_eq!(counter_step(None, 10.0, r), Step::First);
        assert_eq!(counter_step(Some(10.0), 15.0, r), Step::Increase(5.0));
        assert_eq!(counter_step(Some(65_530.0), 4.0, r), Step::Increase(10.0));
        assert_eq!(counter_step(Some(30_000.0), 4.0, r), Step::Reset);
    }
}
