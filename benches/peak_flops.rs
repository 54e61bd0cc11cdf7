//! Peak GFLOP/s of the ALS solve's inner kernel on this machine (one core), the denominator of
//! the training floor in the run report (`train.peak_gflops_per_core`).
//!
//! `cargo bench --bench peak_flops`

fn main() {
    for d in [8usize, 32, 64] {
        let g = recflow::als::kernels::measure_peak_gflops(d);
        println!("symmetric Gram matvec d={d:<3} (L1-resident): {g:7.2} GFLOP/s per core");
    }
}
