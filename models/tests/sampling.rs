//! The sampler against hand-derived expectations.

use mlx_models::runtime::sample::{apply_repetition_penalty, Sampler, SamplingParams};
use mlx_models::Error;
use mlx_rs::Array;

fn logits(values: &[f32]) -> Array {
    Array::from_slice(values, &[values.len() as i32]).unwrap()
}

/// Log-probabilities `ln p` as logits.
fn from_probs(probs: &[f64]) -> Array {
    let l: Vec<f32> = probs.iter().map(|p| p.ln() as f32).collect();
    logits(&l)
}

/// `draws` samples of the same distribution, drawn as one batch `[draws, V]` (one key).
fn batch_draws(sampler: &mut Sampler, row: &Array, draws: i32) -> Vec<u32> {
    let v = row.shape()[0];
    let batch = row
        .reshape(&[1, v])
        .unwrap()
        .broadcast_to(&[draws, v])
        .unwrap();
    sampler
        .sample(&batch, None)
        .unwrap()
        .to_vec::<u32>()
        .unwrap()
}

fn histogram(ids: &[u32], vocab: usize) -> Vec<usize> {
    let mut h = vec![0; vocab];
    for &i in ids {
        h[i as usize] += 1;
    }
    h
}

fn params(temperature: f32) -> SamplingParams {
    SamplingParams {
        temperature,
        seed: Some(7),
        ..SamplingParams::default()
    }
}

#[test]
fn greedy_picks_the_argmax() {
    let mut s = Sampler::new(&SamplingParams::default()).unwrap();
    assert_eq!(
        s.sample(&logits(&[0.1, 2.0, -1.0, 1.9]), None)
            .unwrap()
            .item::<u32>()
            .unwrap(),
        1
    );
    let rows = Array::from_slice(&[5.0f32, 1.0, 2.0, 0.0, 0.0, 3.0], &[2, 3]).unwrap();
    assert_eq!(
        s.sample(&rows, None).unwrap().to_vec::<u32>().unwrap(),
        vec![0, 2]
    );
}

#[test]
fn top_k_one_at_temperature_one_always_picks_the_argmax() {
    let mut s = Sampler::new(&SamplingParams {
        top_k: 1,
        ..params(1.0)
    })
    .unwrap();
    let ids = batch_draws(&mut s, &logits(&[0.0, 0.2, 0.1, -0.3]), 2000);
    assert!(ids.iter().all(|&i| i == 1));
}

#[test]
fn top_k_keeps_the_k_largest() {
    let mut s = Sampler::new(&SamplingParams {
        top_k: 2,
        ..params(1.0)
    })
    .unwrap();
    let h = histogram(
        &batch_draws(&mut s, &logits(&[0.0, 0.2, 0.1, -0.3]), 4000),
        4,
    );
    assert_eq!((h[0], h[3]), (0, 0), "{h:?}");
    assert!(h[1] > 0 && h[2] > 0, "{h:?}");
}

#[test]
fn top_p_keeps_exactly_the_nucleus() {
    // p = [0.5, 0.3, 0.15, 0.05]; ascending cumulative 0.05, 0.20, 0.50, 1.00 (tokens 3, 2, 1, 0).
    // top_p 0.7 keeps cumulative > 0.3: tokens {0, 1}; top_p 0.9 keeps > 0.1: tokens {0, 1, 2}.
    let row = from_probs(&[0.5, 0.3, 0.15, 0.05]);
    for (top_p, kept) in [
        (0.7f32, vec![true, true, false, false]),
        (0.9, vec![true, true, true, false]),
    ] {
        let mut s = Sampler::new(&SamplingParams {
            top_p,
            ..params(1.0)
        })
        .unwrap();
        let h = histogram(&batch_draws(&mut s, &row, 5000), 4);
        for (count, keep) in h.iter().zip(&kept) {
            assert_eq!(*count > 0, *keep, "top_p {top_p}: {h:?}");
        }
        if top_p == 0.7 {
            // Renormalised: 0.5 / 0.8 = 0.625 for token 0.
            let f0 = h[0] as f64 / 5000.0;
            assert!((f0 - 0.625).abs() < 0.03, "{f0}");
        }
    }
}

#[test]
fn min_p_keeps_tokens_above_the_scaled_top_probability() {
    // p = [0.5, 0.3, 0.15, 0.05]: min_p 0.4 → threshold 0.2 keeps {0, 1}; min_p 0.2 → 0.1
    // keeps {0, 1, 2}.
    let row = from_probs(&[0.5, 0.3, 0.15, 0.05]);
    for (min_p, kept) in [
        (0.4f32, vec![true, true, false, false]),
        (0.2, vec![true, true, true, false]),
    ] {
        let mut s = Sampler::new(&SamplingParams {
            min_p,
            ..params(1.0)
        })
        .unwrap();
        let h = histogram(&batch_draws(&mut s, &row, 5000), 4);
        for (count, keep) in h.iter().zip(&kept) {
            assert_eq!(*count > 0, *keep, "min_p {min_p}: {h:?}");
        }
    }
}

#[test]
fn repetition_penalty_follows_ctrl() {
    // 2.0 / 2 = 1.0 and -1.0 · 2 = -2.0; token 0 repeated counts once.
    let out = apply_repetition_penalty(
        &logits(&[2.0, 1.5, -1.0, 0.5]),
        &Array::from_slice(&[0u32, 2, 0], &[3]).unwrap(),
        2.0,
    )
    .unwrap();
    assert_eq!(out.to_vec::<f32>().unwrap(), vec![1.0, 1.5, -2.0, 0.5]);

    // Greedy: the argmax 0 (2.0) is penalised to 1.0 < 1.5, so token 1 wins.
    let greedy = SamplingParams {
        repetition_penalty: 2.0,
        ..SamplingParams::default()
    };
    let mut s = Sampler::new(&greedy).unwrap();
    let recent = Array::from_slice(&[0u32], &[1]).unwrap();
    let row = logits(&[2.0, 1.5, -1.0, 0.5]);
    assert_eq!(
        s.sample(&row, Some(&recent))
            .unwrap()
            .item::<u32>()
            .unwrap(),
        1
    );
    assert_eq!(s.sample(&row, None).unwrap().item::<u32>().unwrap(), 0);
    // Negative logits: -0.5 · 2 = -1.0 < -0.6.
    let neg = logits(&[-0.5, -0.6]);
    assert_eq!(
        s.sample(&neg, Some(&recent))
            .unwrap()
            .item::<u32>()
            .unwrap(),
        1
    );
}

#[test]
fn same_seed_same_sequence() {
    let row = logits(&[0.0, 0.1, 0.2, 0.3]);
    let draw = |seed: u64| -> Vec<u32> {
        let mut s = Sampler::new(&SamplingParams {
            seed: Some(seed),
            ..params(1.0)
        })
        .unwrap();
        (0..64)
            .map(|_| s.sample(&row, None).unwrap().item::<u32>().unwrap())
            .collect()
    };
    let a = draw(11);
    assert_eq!(a, draw(11));
    assert_ne!(a, draw(12));
    // The key advances: 64 draws of a near-uniform distribution are not all equal.
    assert!(a.iter().any(|&t| t != a[0]));
}

#[test]
fn frequencies_match_softmax() {
    let l = [1.0f64, 0.0, -1.0, 0.5];
    let row = logits(&l.map(|x| x as f32));
    for temp in [1.0f64, 0.5] {
        let z: f64 = l.iter().map(|x| (x / temp).exp()).sum();
        let expected: Vec<f64> = l.iter().map(|x| (x / temp).exp() / z).collect();
        let mut s = Sampler::new(&params(temp as f32)).unwrap();
        let h = histogram(&batch_draws(&mut s, &row, 20_000), 4);
        for (count, p) in h.iter().zip(&expected) {
            let f = *count as f64 / 20_000.0;
            assert!((f - p).abs() < 0.03, "temp {temp}: {h:?} vs {expected:?}");
        }
    }
}

#[test]
fn invalid_parameters_are_rejected() {
    let base = SamplingParams::default();
    let bad = [
        SamplingParams {
            temperature: -0.1,
            ..base.clone()
        },
        SamplingParams {
            temperature: f32::NAN,
            ..base.clone()
        },
        SamplingParams {
            top_p: 0.0,
            ..base.clone()
        },
        SamplingParams {
            top_p: 1.5,
            ..base.clone()
        },
        SamplingParams {
            min_p: -0.1,
            ..base.clone()
        },
        SamplingParams {
            min_p: 1.0,
            ..base.clone()
        },
        SamplingParams {
            repetition_penalty: 0.0,
            ..base.clone()
        },
    ];
    for p in bad {
        assert!(
            matches!(Sampler::new(&p), Err(Error::InvalidArgument(_))),
            "{p:?}"
        );
    }
    let bad_shape = Array::from_slice(&[0.0f32; 8], &[2, 2, 2]).unwrap();
    assert!(Sampler::new(&params(1.0))
        .unwrap()
        .sample(&bad_shape, None)
        .is_err());
}
