//! `switchyard-afl-seeds DIR`: writes seed records of the storage encoding into DIR (the
//! other targets' seeds are text, kept in `fuzz/corpus/` as they are).

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: switchyard-afl-seeds DIR");
    std::fs::create_dir_all(&dir).expect("the seed folder");
    let events = [
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#,
        r#"{"specversion":"1.0","id":"2","source":"/s","type":"t","time":"2026-12-04T10:00:00+01:00","datacontenttype":"application/json","data":{"a":[1,2,{"b":null}]},"ext":"x","num":7,"flag":true}"#,
        r#"{"specversion":"1.0","id":"3","source":"/s","type":"t","data_base64":"AAECAwQ="}"#,
        r#"{"specversion":"0.3","id":"4","source":"/s","type":"t","data":"text"}"#,
    ];
    for (i, text) in events.iter().enumerate() {
        let event = switchyard_core::json::decode_event(text.as_bytes()).expect("a seed event");
        let path = format!("{dir}/seed-{i}");
        std::fs::write(&path, switchyard_core::store::encode(&event)).expect("a seed file");
    }
}
