//! The API's OpenAPI document, as committed in `web/openapi.json`: the
//! browser's TypeScript types are generated from that file
//! (`web/api-types.mjs` writes `web/src/api/types.ts`, and a web test fails
//! when the two differ). This test fails when the API and the committed
//! document differ, so a change to the API reaches the browser's types.
//!
//! After changing the API: `STROM_UPDATE_OPENAPI=1 cargo test --test openapi`
//! writes the document, then `npm run api-types` in `web/`.

#[test]
fn the_committed_openapi_document_is_the_api() {
    let doc = serde_json::to_string_pretty(&strom_control_plane::openapi_document())
        .expect("the document serialises")
        + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../web/openapi.json");
    if std::env::var_os("STROM_UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &doc).expect("writing web/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == doc,
        "web/openapi.json is not the API's document: run \
         `STROM_UPDATE_OPENAPI=1 cargo test --test openapi`, then `npm run api-types` in web/"
    );
}
