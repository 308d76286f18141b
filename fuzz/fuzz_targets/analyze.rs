#![no_main]
//! Any UTF-8 text, as response and ground truth, in both modes; any bytes as rewards.
use libfuzzer_sys::fuzz_target;
use medix_core::{analyze, group_advantages, Groups, Mode, Scale};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        for mode in [Mode::Strict, Mode::Reference] {
            let a = analyze(s, Some(s), mode);
            assert!(a.format == 0.0 || a.format == 1.0);
        }
    }
    let rewards: Vec<f64> = data.chunks_exact(8).map(|c| f64::from_ne_bytes(c.try_into().unwrap())).collect();
    for g in 1..=3 {
        if let Ok(out) = group_advantages(&rewards, Groups::Size(g), Scale::Group, 1e-6) {
            assert_eq!(out.advantages.len(), rewards.len());
        }
    }
});
