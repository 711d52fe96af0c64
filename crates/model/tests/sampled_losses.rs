//! Training SASRec with the sampled losses as a user relies on it: the CPU
//! and the GPU train on the same negatives (shared by the batch, drawn per
//! sequence or per position) and give the same losses step after step,
//! gBCE with t = 0 is BCE, every sampled loss trains, and config.json files
//! from before the losses (or the scopes) existed still load.
//!
//! Tolerance across backends as in `tests/backends.rs`: 1e-4 relative per
//! loss (each op differs by a few ulps between the backends; 20 Adam steps
//! amplify that to ~1e-5; different negatives or a wrong kernel change the
//! loss by far more).

use std::sync::atomic::AtomicBool;

mod common;

use sasrec_kernels::{Backend, CpuBackend};
use sasrec_model::{
    EpochRecord, Loss, MemoryStore, ModelConfig, NegativeSampler, NegativesScope, Outcome, Sampler,
    SasRec, Selection, TrainConfig, Trainer,
};

const ITEMS: usize = 1500;

/// The losses of 20 training steps with `config`'s loss, dropout 0.1.
fn losses<B: Backend>(backend: &B, config: &TrainConfig) -> Vec<f32> {
    let model = ModelConfig {
        num_items: ITEMS,
        max_len: 20,
        dim: 32,
        heads: 2,
        layers: 2,
        ff_dim: 128,
        dropout: 0.1,
        options: Default::default(),
    };
    common::step_losses(backend, model, config, &common::users(ITEMS as u32))
}

fn config(loss: Loss, negatives: usize, sampler: Sampler) -> TrainConfig {
    TrainConfig {
        loss,
        negatives,
        sampler,
        ..TrainConfig::default()
    }
}

fn scoped(scope: NegativesScope, exclude_seen: bool, c: TrainConfig) -> TrainConfig {
    TrainConfig {
        negatives_scope: scope,
        exclude_seen,
        ..c
    }
}

#[test]
fn cpu_and_gpu_train_alike_with_every_sampled_loss() {
    let Some(gpu) = sasrec_kernels::gpu::test_backend() else {
        return;
    };
    use NegativesScope::{Batch, Position, Sequence};
    for config in [
        // Sampled softmax with 1,024 negatives, per sequence (the default).
        config(Loss::SampledSoftmax, 1024, Sampler::Uniform),
        scoped(
            Batch,
            false,
            config(Loss::SampledSoftmax, 300, Sampler::Popularity),
        ),
        scoped(Position, false, config(Loss::Bce, 64, Sampler::Uniform)),
        scoped(Sequence, true, config(Loss::Gbce, 256, Sampler::Uniform)),
    ] {
        let cpu = losses(&CpuBackend, &config);
        let on_gpu = losses(&gpu, &config);
        for (step, (c, g)) in cpu.iter().zip(&on_gpu).enumerate() {
            assert!(
                (c - g).abs() <= 1e-4 * c.abs(),
                "{} with {} {} negatives per {}, step {}: cpu loss {c}, gpu loss {g}",
                config.loss,
                config.negatives,
                config.sampler,
                config.negatives_scope,
                step + 1
            );
        }
    }
}

#[test]
fn gbce_with_t_zero_is_bce() {
    let bce = losses(&CpuBackend, &config(Loss::Bce, 64, Sampler::Uniform));
    let gbce = losses(
        &CpuBackend,
        &TrainConfig {
            gbce_t: 0.0,
            ..config(Loss::Gbce, 64, Sampler::Uniform)
        },
    );
    assert_eq!(bce, gbce);
    // And t > 0 changes the training.
    assert_ne!(
        bce,
        losses(&CpuBackend, &config(Loss::Gbce, 64, Sampler::Uniform))
    );
}

#[test]
fn every_sampled_loss_trains() {
    let b = CpuBackend;
    let train = common::cyclic_users(48);
    let valid = common::cyclic_valid(&train);
    use NegativesScope::{Batch, Position, Sequence};
    for (loss, scope, exclude_seen) in [
        (Loss::SampledSoftmax, Sequence, false),
        (Loss::SampledSoftmax, Batch, false),
        (Loss::SampledSoftmax, Position, true),
        (Loss::Bce, Sequence, false),
        (Loss::Gbce, Sequence, true),
    ] {
        let model = SasRec::new(&b, common::cyclic_model(), 11);
        let config = TrainConfig {
            batch_size: 16,
            lr: 5e-3,
            epochs: 15,
            selection: Selection::Ndcg(10),
            seed: 3,
            ..scoped(scope, exclude_seen, config(loss, 8, Sampler::Uniform))
        };
        let mut store = MemoryStore::default();
        let mut t = Trainer::new(&b, model, config, &train, &valid, true).unwrap();
        t.progress = false;
        assert_eq!(
            t.run(&mut store, &AtomicBool::new(false)).unwrap(),
            Outcome::Completed
        );
        let records = store.epochs();
        let (first, last) = (&records[0], &records[14]);
        let what = format!("{loss} per {scope} (exclude_seen {exclude_seen})");
        assert!(
            last.train_loss < 0.7 * first.train_loss,
            "{what}: train loss {} -> {}",
            first.train_loss,
            last.train_loss
        );
        let ndcg = |r: &EpochRecord| r.valid.ranking.as_ref().unwrap().ndcg(10).unwrap();
        // The binary losses first push every logit down (one positive
        // against 8 negatives) and rank better only after about 100 steps
        // here; the sampled softmax ranks better within 45.
        if loss == Loss::SampledSoftmax {
            assert!(
                ndcg(last) > ndcg(first) + 0.1,
                "{what}: NDCG@10 {} -> {}",
                ndcg(first),
                ndcg(last)
            );
        }
        // Validation reports the full softmax whatever the training loss.
        assert!(last.valid.loss < first.valid.loss, "{what}");
    }
}

#[test]
fn settings_are_checked_against_the_catalogue() {
    let too_many = config(Loss::SampledSoftmax, 30, Sampler::Uniform);
    let err = too_many.check_catalogue(30).unwrap_err().to_string();
    assert_eq!(
        err,
        "negatives must be at most 29 (the 30 items less the target), got 30; \
         a catalogue this small trains well with the full softmax (--loss full)"
    );
    assert!(
        config(Loss::Bce, 29, Sampler::Uniform)
            .check_catalogue(30)
            .is_ok()
    );
    // The full softmax draws nothing: its stored default is not checked.
    assert!(TrainConfig::default().check_catalogue(30).is_ok());
    let err = config(Loss::Full, 256, Sampler::Popularity)
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("sampler popularity draws negatives"),
        "{err}"
    );
    let err = config(Loss::Gbce, 0, Sampler::Uniform)
        .validate()
        .unwrap_err();
    assert_eq!(err.to_string(), "negatives must be at least 1, got 0");
    for t in [-0.1, 1.5, f64::NAN] {
        let bad = TrainConfig {
            gbce_t: t,
            ..config(Loss::Gbce, 8, Sampler::Uniform)
        };
        assert_eq!(bad.validate().unwrap_err().field, "gbce_t");
    }
    // Excluding a user's items: per sequence or position, uniform only.
    for bad in [
        scoped(
            NegativesScope::Batch,
            true,
            config(Loss::Bce, 8, Sampler::Uniform),
        ),
        scoped(
            NegativesScope::Sequence,
            true,
            config(Loss::Bce, 8, Sampler::Popularity),
        ),
        scoped(
            NegativesScope::Sequence,
            true,
            config(Loss::Full, 8, Sampler::Uniform),
        ),
    ] {
        assert_eq!(bad.validate().unwrap_err().field, "exclude_seen");
    }
    assert_eq!(
        TrainConfig {
            eval_every: 0,
            ..TrainConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string(),
        "eval_every must be at least 1, got 0"
    );
}

#[test]
fn an_older_train_config_loads_with_the_full_softmax() {
    // config.json's "train" part as written before the sampled losses.
    let old = r#"{"batch_size":128,"lr":0.001,"beta1":0.9,"beta2":0.999,"eps":1e-8,
        "epochs":10,"patience":null,"selection":{"ndcg":10},"seed":42,"ks":[10,20]}"#;
    let config: TrainConfig = serde_json::from_str(old).unwrap();
    assert_eq!(config.loss, Loss::Full);
    assert_eq!(
        (config.negatives, config.sampler, config.gbce_t),
        (256, Sampler::Uniform, 0.75)
    );
    // Runs from before the scopes shared their negatives across the batch,
    // and validated every epoch.
    assert_eq!(
        (
            config.negatives_scope,
            config.exclude_seen,
            config.eval_every
        ),
        (NegativesScope::Batch, false, 1)
    );
    assert_eq!(
        TrainConfig::default().negatives_scope,
        NegativesScope::Sequence
    );
    assert!(NegativeSampler::new(&config, 100, &[]).is_none());
    let written = serde_json::to_value(TrainConfig {
        loss: Loss::SampledSoftmax,
        ..config
    })
    .unwrap();
    assert_eq!(written["loss"], "sampled-softmax");
    assert_eq!(written["sampler"], "uniform");
}
