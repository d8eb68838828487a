//! The per-layer table of the PyTorch pack: one row per `nn.Module` (by path and class), with
//! its calls, the wall time of those calls (children included), and the GPU time of the work
//! launched while they ran on their thread (a CUDA call inside the module's call, see
//! [`Enclosing`]).
use std::collections::HashMap;

use serde_json::json;

use super::{ms, Section};
use crate::recording::{launch::Enclosing, Recording};

/// One row per module of the PyTorch pack, slowest first.
pub(super) fn pytorch_layers(rec: &Recording, top: usize) -> Option<Section> {
    let layer_probes: Vec<bool> = rec
        .probes
        .iter()
        .map(|p| p.pack.as_deref() == Some("pytorch"))
        .collect();
    if !layer_probes.iter().any(|&b| b) {
        return None;
    }
    // probe -> (calls, wall ns, GPU ns)
    let mut rows: HashMap<u32, (u64, u64, u64)> = HashMap::new();
    for s in rec
        .spans
        .iter()
        .filter(|s| layer_probes.get(s.probe as usize) == Some(&true))
    {
        let r = rows.entry(s.probe).or_default();
        r.0 += 1;
        r.1 += s.end_ns.saturating_sub(s.start_ns);
    }
    // Each op's GPU time to every module call it was launched inside (a module's time
    // includes its children's, as its wall time does).
    let enclosing = Enclosing::new(rec, |p| layer_probes.get(p as usize) == Some(&true));
    for op in &rec.gpu.ops {
        for span in enclosing.of_op(rec, op) {
            let probe = rec.spans[span as usize].probe;
            rows.entry(probe).or_default().2 += op.duration_ns();
        }
    }
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then(a.0.cmp(&b.0)));
    let mut section = Section::table(
        "pytorch_layers",
        "PyTorch modules (calls, time with children, GPU time of the work they launched)",
        &["module", "calls", "total ms", "mean ms", "GPU ms"],
    );
    let gpu = !rec.gpu.ops.is_empty();
    for (probe, (calls, ns, gpu_ns)) in rows.into_iter().take(top) {
        section.rows.push(vec![
            json!(rec.probes[probe as usize].function),
            json!(calls),
            ms(ns),
            ms(ns / calls.max(1)),
            if gpu { ms(gpu_ns) } else { json!(null) },
        ]);
    }
    Some(section.or_absent("no nn.Module was called while recording"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::fixtures::with_a_layer;

    #[test]
    fn a_layer_gets_the_gpu_time_of_what_it_launched() {
        let rec = with_a_layer();
        let s = pytorch_layers(&rec, 10).expect("a PyTorch module was probed");
        assert_eq!(s.rows.len(), 1);
        assert_eq!(s.rows[0][0], "model.layers.0 (Layer)");
        assert_eq!(s.rows[0][1], 1);
        assert_eq!(s.rows[0][2], 0.13);
        assert_eq!(s.rows[0][4], 0.3, "the two gemms launched inside it");
        assert!(pytorch_layers(&crate::recording::fixtures::gpu_recording(), 10).is_none());
    }
}
