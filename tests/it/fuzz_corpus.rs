//! Replays the saved fuzz corpora (`fuzz/corpus/<target>/`) through the same
//! functions the fuzz targets call, so the targets never rot and every input
//! a fuzzer once found interesting stays a regression test.

use std::path::PathBuf;

use conduit::fuzz_targets;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        run(&data);
        count += 1;
    }
    assert!(count > 0, "the {target} corpus is empty");
}

#[test]
fn routing_corpus() {
    replay("routing", fuzz_targets::routing);
}

#[test]
fn config_corpus() {
    replay("config", fuzz_targets::config);
}

#[test]
fn stored_records_corpus() {
    replay("stored_records", fuzz_targets::stored_records);
}

#[test]
fn canonical_json_corpus() {
    replay("canonical_json", fuzz_targets::canonical);
}

#[test]
fn api_request_corpus() {
    replay("api_request", fuzz_targets::api_request);
}

#[test]
fn pdu_corpus() {
    replay("pdu", fuzz_targets::pdu);
}

#[test]
fn auth_check_corpus() {
    replay("auth_check", fuzz_targets::auth_check);
}

#[test]
fn thumbnail_corpus() {
    replay("thumbnail", fuzz_targets::thumbnail);
}

#[test]
fn url_preview_corpus() {
    replay("url_preview", fuzz_targets::url_preview);
}

#[test]
fn x_matrix_corpus() {
    replay("x_matrix", fuzz_targets::x_matrix);
}

#[test]
fn federation_receive_corpus() {
    replay("federation_receive", fuzz_targets::federation_receive);
}

#[test]
fn federation_pdu_corpus() {
    replay("federation_pdu", fuzz_targets::federation_pdu);
}

#[test]
fn media_multipart_corpus() {
    replay("media_multipart", fuzz_targets::media_multipart);
}
