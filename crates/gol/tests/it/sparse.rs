//! The sparse engine against the byte-per-cell reference: generation by
//! generation on soups and classic patterns, across the dead border, and
//! through its period skipping (one long `advance`, or many short ones),
//! then the benchmark itself through `run_size` up to boards of side 2^62.
//!
//! Slow cases (the reference stepping a board of side 512 for 2036
//! generations, more spaceships on boards past one tile) run in release builds,
//! or in debug builds when `WEIR_GOL_SLOW=1`.

use proptest::prelude::*;
use weir_gol::sparse::Sparse;
use weir_gol::{Cell, Engine, Life, RunConfig, expected_end, generations, glider, run_size};

use crate::patterns::{BEEHIVE, BLINKER, BLOCK, LWSS, R_PENTOMINO, at, mirrored, pulsar, slow};
use crate::reference::Reference;
use crate::soup::{Rng, soup};

/// Steps `cells` on a board of side `tam` with the reference and the sparse
/// engine, one generation at a time, and checks every generation.
fn check_each(tam: u64, cells: &[Cell], generations: u64, what: &str) {
    let mut reference = Reference::new(tam, cells);
    let mut board = Sparse::new(tam, cells);
    assert_eq!(board.side(), tam);
    assert_eq!(board.live_cells(), reference.live_cells(), "{what}: start");
    for generation in 1..=generations {
        reference.step();
        board.advance(1);
        assert_eq!(
            board.live_cells(),
            reference.live_cells(),
            "{what}: generation {generation}"
        );
    }
    assert_eq!(board.generation(), generations);
}

/// Advances the sparse engine by each of `splits` in turn, the reference
/// by as many single steps, and checks after each call.
fn check_splits(tam: u64, cells: &[Cell], splits: &[u64], what: &str) {
    let mut reference = Reference::new(tam, cells);
    let mut board = Sparse::new(tam, cells);
    let mut done = 0;
    for &n in splits {
        for _ in 0..n {
            reference.step();
        }
        board.advance(n);
        done += n;
        assert_eq!(
            board.live_cells(),
            reference.live_cells(),
            "{what}: after {done} generations (splits {splits:?})"
        );
        assert_eq!(board.population(), board.live_cells().len() as u64);
    }
}

#[test]
fn random_soups_match_the_reference_every_generation() {
    let mut seed = 1;
    for tam in [8, 13, 32, 63, 64, 65, 70, 100, 128] {
        for density in [0.2, 0.35, 0.5] {
            seed += 1;
            let generations = 30 + seed % 31;
            let what = format!("soup tam {tam} density {density} seed {seed}");
            check_each(tam, &soup(tam, density, seed), generations, &what);
        }
    }
}

#[test]
fn random_soups_match_the_reference_through_long_advances() {
    // Soups settle into still lifes and blinkers: the skips of d = 0,
    // including patterns that touch the border.
    let mut rng = Rng(7);
    for tam in [8, 16, 21, 40, 70] {
        for seed in 0..4 {
            let cells = soup(tam, 0.2 + 0.1 * seed as f64, 100 + seed);
            let splits: Vec<u64> = (0..6).map(|_| rng.between(1, 150)).collect();
            check_splits(tam, &cells, &splits, &format!("soup tam {tam} seed {seed}"));
        }
    }
}

#[test]
fn oscillators_and_still_lifes() {
    for tam in [3, 5, 10] {
        check_each(tam, &at(BLINKER, (1, 0)), 10, &format!("blinker tam {tam}"));
    }
    check_each(32, &at(&pulsar(), (9, 9)), 30, "pulsar");
    check_each(15, &at(&pulsar(), (1, 1)), 30, "pulsar touching the border");
    check_each(13, &pulsar(), 30, "pulsar on the border");
    check_each(16, &at(BLOCK, (5, 5)), 5, "block");
    check_each(16, &at(BEEHIVE, (5, 5)), 5, "beehive");
    // On the border, still and oscillating on the board itself.
    check_each(8, BLOCK, 5, "block in the corner");
    check_each(8, &at(BLOCK, (6, 6)), 5, "block in the far corner");
    check_each(8, &at(BEEHIVE, (5, 4)), 5, "beehive on the bottom edge");
    check_each(8, &[(1, 0), (2, 0), (3, 0)], 5, "blinker on the west edge");

    // Far ahead in one call: whole periods skipped, the rest simulated.
    let far = 600_000_000_001;
    let cases: Vec<(u64, Vec<Cell>, &str)> = vec![
        (10, at(BLINKER, (4, 3)), "blinker"),
        (32, at(&pulsar(), (9, 9)), "pulsar"),
        (16, at(BEEHIVE, (5, 5)), "beehive"),
        (8, BLOCK.to_vec(), "corner block"),
    ];
    for (tam, cells, what) in cases {
        let mut board = Sparse::new(tam, &cells);
        board.advance(far);
        let mut reference = Reference::new(tam, &cells);
        reference.step(); // every period here divides 600_000_000_000
        assert_eq!(board.live_cells(), reference.live_cells(), "{what}");
        assert_eq!(board.generation(), far);
    }
}

#[test]
fn nothing_stays_nothing() {
    let mut board = Sparse::new(1 << 40, &[]);
    board.advance(u64::MAX);
    assert!(board.live_cells().is_empty());
    // A lone cell dies, then nothing happens for a long time.
    let mut board = Sparse::new(1 << 40, &[(5, 5)]);
    board.advance(1 << 50);
    assert!(board.live_cells().is_empty());
    assert_eq!(board.generation(), 1 << 50);
}

#[test]
fn gliders_cross_the_board_and_die_on_the_border() {
    // Every orientation, on sides that are and are not multiples of 64,
    // one generation at a time well past the collision with the border
    // (where the glider becomes a block, or dies).
    for tam in [8, 20, 70] {
        for (rows, cols) in [(false, false), (false, true), (true, false), (true, true)] {
            let start = at(
                &mirrored(&glider(), 3, rows, cols),
                (tam / 2 - 1, tam / 2 - 1),
            );
            let what = format!("glider tam {tam} mirrored {rows}/{cols}");
            check_each(tam, &start, 2 * tam + 20, &what);
        }
    }
    // The benchmark's glider ends in the corner, then becomes a block.
    check_each(20, &glider(), generations(20) + 20, "benchmark glider");
}

#[test]
fn a_lightweight_spaceship_crosses_the_board() {
    for (rows, cols) in [(false, false), (true, true)] {
        let ship = mirrored(LWSS, 5, rows, cols);
        let tam = 70;
        // `mirrored` treats the 4×5 box as 5×5: shift the rows back.
        let ship: Vec<Cell> = ship
            .iter()
            .map(|&(r, c)| (r - u64::from(rows), c))
            .collect();
        let start = at(&ship, (30, 30));
        check_each(tam, &start, 120, &format!("lwss mirrored {rows}"));
        // Vertically: transpose.
        let down: Vec<Cell> = start.iter().map(|&(r, c)| (c, r)).collect();
        check_each(tam, &down, 120, &format!("lwss down mirrored {rows}"));
    }
}

#[test]
fn patterns_shaped_by_the_border_are_not_skipped_as_if_on_the_plane() {
    // Found by a search of small soups against the top edge: each becomes
    // a pattern that repeats shifted only because the border suppressed
    // births; skipping it as if the plane's rules held (ignoring that its
    // phases touch the edge) gives a wrong board.
    let cases: &[&[Cell]] = &[
        &[(0, 31), (1, 30), (1, 31), (1, 32)],
        &[(0, 12), (1, 11), (1, 12), (1, 13), (4, 12)],
        &[
            (0, 18),
            (0, 19),
            (0, 21),
            (0, 22),
            (1, 21),
            (3, 20),
            (3, 22),
        ],
    ];
    for cells in cases {
        for splits in [&[300][..], &[37, 100, 163], &[1, 2, 3, 4, 290]] {
            check_splits(48, cells, splits, &format!("{cells:?}"));
        }
        // The same against the other three edges.
        let flipped: Vec<Cell> = cells.iter().map(|&(r, c)| (47 - r, c)).collect();
        let west: Vec<Cell> = cells.iter().map(|&(r, c)| (c, r)).collect();
        let east: Vec<Cell> = cells.iter().map(|&(r, c)| (c, 47 - r)).collect();
        for cells in [flipped, west, east] {
            check_splits(48, &cells, &[300], &format!("{cells:?}"));
        }
    }
}

#[test]
fn the_r_pentomino_matches_at_fixed_generations() {
    let tam = 256;
    let start = at(R_PENTOMINO, (128, 128));
    let mut reference = Reference::new(tam, &start);
    let mut board = Sparse::new(tam, &start);
    let mut done = 0;
    let targets: &[u64] = if slow() {
        &[50, 100, 200, 400]
    } else {
        &[50, 100, 200]
    };
    for &target in targets {
        while done < target {
            reference.step();
            done += 1;
        }
        board.advance(target - board.generation());
        let expected = reference.live_cells();
        assert_eq!(board.population(), expected.len() as u64, "gen {target}");
        assert_eq!(board.live_cells(), expected, "gen {target}");
    }
}

#[test]
fn spaceships_skipped_in_long_advances_match_the_reference() {
    // The skip path of d ≠ 0: gliders in every direction and spaceships,
    // from several places, advanced in random splits (some long, some of
    // one generation), until long after they hit the border.
    let mut rng = Rng(42);
    let ships: Vec<(Vec<Cell>, u64)> = vec![
        (glider(), 3),
        (mirrored(&glider(), 3, true, false), 3),
        (mirrored(&glider(), 3, false, true), 3),
        (mirrored(&glider(), 3, true, true), 3),
        (LWSS.to_vec(), 5),
        (mirrored(LWSS, 5, false, true), 5),
        (LWSS.iter().map(|&(r, c)| (c, r)).collect(), 5),
    ];
    let sides: &[u64] = if slow() {
        &[9, 16, 33, 70, 130]
    } else {
        &[9, 16, 33, 70]
    };
    for &tam in sides {
        for (ship, size) in &ships {
            // Past one tile, one place each in debug builds.
            let places = if slow() || tam < 64 { 3 } else { 1 };
            for _ in 0..places {
                let offset = (rng.between(0, tam - size), rng.between(0, tam - size));
                // In any of its phases, so that periods are found at every
                // alignment with the ship's motion.
                let mut phase = Reference::new(tam, &at(ship, offset));
                for _ in 0..rng.between(0, 3) {
                    phase.step();
                }
                let start = phase.live_cells();
                let mut splits: Vec<u64> = (0..5).map(|_| rng.between(1, 3 * tam)).collect();
                splits.extend([1, 1, 2, 3, 5, 8, 4 * tam]);
                check_splits(tam, &start, &splits, &format!("ship tam {tam}"));
            }
        }
    }
}

#[test]
fn the_benchmark_glider_on_512_in_one_call_and_in_pieces() {
    let tam = 512;
    let n = generations(tam);
    let expected = expected_end(tam);
    if slow() {
        let mut reference = Reference::new(tam, &glider());
        for _ in 0..n {
            reference.step();
        }
        assert_eq!(reference.live_cells(), expected, "the reference");
    }

    let mut board = Sparse::new(tam, &glider());
    board.advance(n);
    assert_eq!(board.live_cells(), expected, "one call");
    assert_eq!(board.generation(), n);
    // A few generations to find the period, the last ones at the corner;
    // the rest skipped.
    assert!(board.computed() < 40, "computed {}", board.computed());

    for splits in [
        vec![n / 2, n - n / 2],
        vec![1, 2, 3, 1000, n - 1006],
        vec![7, 500, 500, 500, 500, n - 2007],
        vec![n - 1, 1],
    ] {
        let mut board = Sparse::new(tam, &glider());
        for &s in &splits {
            board.advance(s);
        }
        assert_eq!(board.live_cells(), expected, "splits {splits:?}");
    }
    // And, generation by generation, through the same engine without
    // skips: every call of one generation is shorter than the period.
    let mut board = Sparse::new(tam, &glider());
    for _ in 0..n {
        board.advance(1);
    }
    assert_eq!(board.live_cells(), expected, "one generation a call");
    assert_eq!(board.computed(), n);
}

#[test]
fn run_size_is_correct_with_the_sparse_engine() {
    let config = RunConfig {
        engine: Engine::Sparse,
        ..RunConfig::default()
    };
    for pow in (3..=20).chain([24, 30, 40, 62]) {
        let result = run_size(pow, &config).expect("runs");
        assert!(result.correct, "pow {pow}");
        assert_eq!(result.engine, Engine::Sparse);
        assert_eq!(result.generations, generations(1 << pow));
    }
}

#[test]
fn the_benchmark_glider_computes_few_generations_whatever_the_side() {
    for pow in [10, 20, 30, 62] {
        let tam = 1u64 << pow;
        let mut board = Sparse::new(tam, &glider());
        board.advance(generations(tam));
        assert_eq!(board.live_cells(), expected_end(tam), "pow {pow}");
        println!("pow {pow}: {} generations computed", board.computed());
        assert!(
            board.computed() < 40,
            "pow {pow}: computed {}",
            board.computed()
        );
    }
}

#[test]
#[should_panic(expected = "outside a board of side 8")]
fn a_cell_outside_the_board_is_refused() {
    let _ = Sparse::new(8, &[(8, 0)]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any pattern, any split of the generations: the reference's answer.
    #[test]
    fn any_pattern_any_split(
        tam in 3u64..24,
        cells in prop::collection::vec((0u64..24, 0u64..24), 0..80),
        splits in prop::collection::vec(1u64..40, 1..6),
    ) {
        let cells: Vec<Cell> = cells.into_iter().filter(|&(r, c)| r < tam && c < tam).collect();
        let mut reference = Reference::new(tam, &cells);
        let mut board = Sparse::new(tam, &cells);
        for &n in &splits {
            for _ in 0..n {
                reference.step();
            }
            board.advance(n);
            prop_assert_eq!(board.live_cells(), reference.live_cells());
        }
    }
}
