//! Criterion benches of the core alone (no FFI): batch parsing in both modes and group advantages.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use medix_core::{analyze, group_advantages, Groups, Mode, Scale};

fn completion(i: usize) -> String {
    let reasoning =
        "The axial image shows a hypodense lesion with arterial enhancement and washout. ".repeat(16);
    format!(
        "<CT_SCAN> <thinking>{reasoning} case {i}</thinking>\n<answer>Hepatocellular carcinoma {}</answer>",
        i % 7
    )
}

fn bench(c: &mut Criterion) {
    let texts: Vec<String> = (0..4096).map(completion).collect();
    for (name, mode) in [("strict", Mode::Strict), ("reference", Mode::Reference)] {
        c.bench_function(&format!("analyze_4096_{name}"), |b| {
            b.iter(|| {
                texts
                    .iter()
                    .map(|t| analyze(black_box(t), Some("<CT_SCAN> HCC"), mode).format)
                    .sum::<f64>()
            });
        });
    }
    let rewards: Vec<f64> = (0..8192).map(|i| f64::from((i * 7919) % 13) / 13.0).collect();
    c.bench_function("group_advantages_8192x8", |b| {
        b.iter(|| group_advantages(black_box(&rewards), Groups::Size(8), Scale::Group, 1e-6).unwrap());
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
