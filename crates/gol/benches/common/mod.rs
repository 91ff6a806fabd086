//! What the benches share: a fixed random soup.

/// A third of the cells of a `size`×`size` square alive, from a fixed
/// xorshift seed.
pub(crate) fn soup(size: u64) -> Vec<(u64, u64)> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut cells = Vec::new();
    for r in 0..size {
        for c in 0..size {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state.is_multiple_of(3) {
                cells.push((r, c));
            }
        }
    }
    cells
}
