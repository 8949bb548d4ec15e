//! Fuzz the Prefect API response models: any bytes must parse or be refused, never panic;
//! what parses must be usable (state helpers).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prefect_client::models::*;

fuzz_target!(|data: &[u8]| {
    if let Ok(fr) = serde_json::from_slice::<FlowRun>(data) {
        let _ = fr.current_state_type();
        let _ = fr.current_state_type().map(|t| t.is_final());
    }
    let _ = serde_json::from_slice::<Vec<WorkerFlowRunResponse>>(data);
    let _ = serde_json::from_slice::<WorkPool>(data);
    let _ = serde_json::from_slice::<Deployment>(data);
    let _ = serde_json::from_slice::<Flow>(data);
    let _ = serde_json::from_slice::<SetStateResponse>(data);
    let _ = serde_json::from_slice::<State>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = prefect_client::ServerVersion::parse(s);
    }
});
