//! The BPF side's stop rules ([`crate::stop`]): breakpoints by probe id, and how many stops
//! the session may still make.
use aya::maps::{Array, HashMap};
use modelprobe_common::stop::StopRule;

use super::Sampler;
use crate::{Error, Result};

impl Sampler {
    /// Sets a breakpoint on probe `probe`.
    pub fn set_stop_rule(&mut self, probe: u32, rule: StopRule) -> Result<()> {
        let map = self
            .bpf
            .map_mut("STOP_RULES")
            .ok_or_else(|| super::missing("STOP_RULES"))?;
        let mut rules: HashMap<_, u32, StopRule> =
            HashMap::try_from(map).map_err(|e| Error::bpf("opening STOP_RULES", e))?;
        rules
            .insert(probe, rule, 0)
            .map_err(|e| Error::bpf(format!("setting the breakpoint on probe {probe}"), e))
    }

    /// Lets the BPF side make `n` more stops.
    pub fn set_stop_budget(&mut self, n: u64) -> Result<()> {
        let map = self
            .bpf
            .map_mut("STOP_BUDGET")
            .ok_or_else(|| super::missing("STOP_BUDGET"))?;
        let mut budget: Array<_, u64> =
            Array::try_from(map).map_err(|e| Error::bpf("opening STOP_BUDGET", e))?;
        budget
            .set(0, n, 0)
            .map_err(|e| Error::bpf("setting the stop budget", e))
    }
}
