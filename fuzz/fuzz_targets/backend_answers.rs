//! What backends answer: Elasticsearch `_bulk` responses, OTLP export responses (protobuf and
//! proto-JSON), and MQTT frames from a broker. Any bytes: no panic, bounded work.

#![no_main]

use libfuzzer_sys::fuzz_target;
use metricspool::backends::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let _ = fuzzing::elasticsearch_bulk_response(rest, usize::from(which / 3) % 64);
        }
        1 => {
            let _ = fuzzing::otlp_response(rest);
        }
        _ => {
            let _ = fuzzing::mqtt_frames(rest);
        }
    }
});
