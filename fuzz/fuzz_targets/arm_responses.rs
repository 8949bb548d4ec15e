//! Fuzz the ARM/AAD/IMDS response models: any bytes must parse or be refused, never panic.
#![no_main]

use arm_models::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<ContainerGroup>(data);
    let _ = serde_json::from_slice::<ListResult<ContainerGroup>>(data);
    let _ = serde_json::from_slice::<ErrorResponse>(data);
    let _ = serde_json::from_slice::<AsyncOperationStatus>(data);
    let _ = serde_json::from_slice::<AadTokenResponse>(data);
    let _ = serde_json::from_slice::<AadError>(data);
    let _ = serde_json::from_slice::<ImdsTokenResponse>(data);
    let _ = serde_json::from_slice::<ResourceGroup>(data);
    let _ = serde_json::from_slice::<UserAssignedIdentity>(data);
    let _ = serde_json::from_slice::<container_group::Logs>(data);
});
