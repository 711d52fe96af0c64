//! The embedding family (row gather and its scatter-add backward): the CPU
//! backend against a plain gather and finite differences, then the WGSL
//! kernels against the CPU, with tables bound whole and in blocks.

mod common;

use common::{BE, check_grad, dot64, rng, t, to64, uniform};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use sasrec_kernels::Backend;
use sasrec_kernels::testing::{BackendPair, Tol, assert_close};

// ----- CPU reference ---------------------------------------------------------

#[test]
fn embedding_forward_and_backward() {
    let mut r = rng(3);
    let (vocab, dim) = (11, 5);
    let table = uniform(&mut r, vocab * dim, 1.0);
    // Repeated ids, padding (0) and the last row.
    let ids = [3u32, 0, 3, 10, 1, 0, 7, 3, 10];
    let n = ids.len();
    let ttable = t(&table, &[vocab, dim]);
    let tids = BE.ids(&ids);
    assert_eq!(BE.ids_host(&tids), ids);

    let y = BE.embedding(&ttable, &tids);
    assert_eq!(BE.shape(&y), [n, dim]);
    let expected: Vec<f64> = ids
        .iter()
        .flat_map(|&id| to64(&table[id as usize * dim..(id as usize + 1) * dim]))
        .collect();
    assert_close("embedding", y.data(), &expected, Tol::new(0.0, 0.0));

    let dy = uniform(&mut r, n * dim, 1.0);
    let dy64 = to64(&dy);
    let gather = |table: &[f64]| -> Vec<f64> {
        ids.iter()
            .flat_map(|&id| table[id as usize * dim..(id as usize + 1) * dim].to_vec())
            .collect()
    };
    let dtable = BE.embedding_backward(&t(&dy, &[n, dim]), &tids, vocab, None);
    assert_eq!(BE.shape(&dtable), [vocab, dim]);
    check_grad("embedding dtable", &table, dtable.data(), |tb| {
        dot64(&dy64, &gather(tb))
    });

    // With padding_idx the padding row gets no gradient; the rest is unchanged.
    let padded = BE.embedding_backward(&t(&dy, &[n, dim]), &tids, vocab, Some(0));
    assert!(padded.data()[..dim].iter().all(|&g| g == 0.0));
    assert_eq!(&padded.data()[dim..], &dtable.data()[dim..]);
    assert!(dtable.data()[..dim].iter().any(|&g| g != 0.0));
}

#[test]
#[should_panic(expected = "embedding: id 11 is out of range")]
fn embedding_rejects_out_of_range_ids() {
    BE.embedding(&BE.zeros(&[11, 2]), &BE.ids(&[1, 11]));
}

// ----- GPU against CPU ---------------------------------------------------------

fn check_embedding(p: &BackendPair, rng: &mut ChaCha8Rng, vocab: usize, dim: usize) {
    // Repeated ids and padding (0) in every pattern.
    let ids: Vec<u32> = (0..97).map(|_| rng.random_range(0..vocab as u32)).collect();
    let ids = [&[0u32, 0, 3, 3, 3][..], &ids].concat();
    let (ct, gt) = p.tensor(&uniform(rng, vocab * dim, 1.0), &[vocab, dim]);
    let (cids, gids) = p.ids(&ids);
    p.check(
        "embedding",
        &p.cpu.embedding(&ct, &cids),
        &p.gpu.embedding(&gt, &gids),
        Tol::EXACT,
    );
    let (cdy, gdy) = p.tensor(&uniform(rng, ids.len() * dim, 1.0), &[ids.len(), dim]);
    for padding in [Some(0), None] {
        // Sums in increasing position order on both sides: identical.
        p.check(
            &format!("embedding_backward padding {padding:?}"),
            &p.cpu.embedding_backward(&cdy, &cids, vocab, padding),
            &p.gpu.embedding_backward(&gdy, &gids, vocab, padding),
            Tol::EXACT,
        );
    }
}

#[test]
fn embedding_gather_and_scatter_add() {
    let Some(p) = BackendPair::new() else { return };
    let mut rng = rng(9);
    check_embedding(&p, &mut rng, 23, 10);
    check_embedding(&p, &mut rng, 1000, 67);
}

#[test]
fn embedding_table_chunked_across_small_bindings() {
    // 2 KiB bindings: the 1000 x 3 table is bound ~160 rows at a time.
    let Some(p) = BackendPair::narrow(2048) else {
        return;
    };
    let mut rng = rng(10);
    check_embedding(&p, &mut rng, 1000, 3);
}

// ----- NaN and infinities -------------------------------------------------------

#[test]
fn nan_and_infinities_propagate_like_the_cpu() {
    let Some(p) = BackendPair::new() else { return };
    let (vocab, dim) = (5, 3);
    let mut table = vec![0.5f32; vocab * dim];
    table[2 * dim + 1] = f32::NAN;
    table[3 * dim] = f32::INFINITY;
    let ids = [2u32, 0, 3, 2, 4];
    let (ct, gt) = p.tensor(&table, &[vocab, dim]);
    let (cids, gids) = p.ids(&ids);
    let rows = p.cpu.embedding(&ct, &cids);
    assert!(rows.data()[1].is_nan() && rows.data()[3 * dim + 1].is_nan());
    p.check_with_non_finite("embedding", &rows, &p.gpu.embedding(&gt, &gids), Tol::EXACT);

    let mut dy = vec![1.0f32; ids.len() * dim];
    dy[0] = f32::NAN; // position 0 looks up id 2
    dy[2 * dim + 2] = f32::NEG_INFINITY; // position 2 looks up id 3
    let (cdy, gdy) = p.tensor(&dy, &[ids.len(), dim]);
    let dtable = p.cpu.embedding_backward(&cdy, &cids, vocab, Some(0));
    assert!(dtable.data()[2 * dim].is_nan() && dtable.data()[3 * dim + 2] == f32::NEG_INFINITY);
    p.check_with_non_finite(
        "embedding_backward",
        &dtable,
        &p.gpu.embedding_backward(&gdy, &gids, vocab, Some(0)),
        Tol::EXACT,
    );
}
