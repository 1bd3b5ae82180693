//! The whole thumbnail pipeline on real parts: moto (S3 + SQS), the real `switchyard` binary
//! with this example's `switchyard.yaml`, the real `thumbnail` function. Uploads images
//! (one with a space and unicode in its key, one large, one corrupt) and checks the
//! thumbnails, the reply events, the dead letter and its redrive; and one trace from the S3
//! notification through the broker and the function to the reply's delivery.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

#[path = "../../../tests/common/moto.rs"]
mod moto;
#[path = "../../../tests/common/otlp.rs"]
mod otlp;
#[path = "../../../tests/common/sink.rs"]
mod sink;

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use image::{DynamicImage, ImageFormat};
use sink::Sink;

const WAIT: Duration = Duration::from_secs(60);

/// `switchyard`, built next to this test by `cargo test --workspace`.
fn switchyard_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("switchyard");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p switchyard`",
        bin.display()
    );
    bin
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a program that prints "… listening on http://ADDR" first; returns it and the URL.
fn spawn(mut cmd: Command) -> (Killed, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split("listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim()
        .to_owned();
    (Killed(child), url)
}

fn image_bytes(w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
    // A gradient with some texture, so the large one is large.
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x % 256) as u8,
            (y % 256) as u8,
            ((x * 7 + y * 13) % 256) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .unwrap();
    out.into_inner()
}

#[tokio::test]
async fn uploads_become_thumbnails_replies_and_dead_letters() {
    let unique = moto::unique();
    let (photos, thumbs) = (format!("photos-{unique}"), format!("thumbs-{unique}"));
    let queue = moto::bucket_notifying_queue(&photos, &format!("photo-uploads-{unique}")).await;
    moto::s3_put(&thumbs, "application/xml", Vec::new()).await;
    let c = reqwest::Client::new();
    // Both export their spans here.
    let receiver = otlp::Receiver::start().await;

    // The function and the display.
    let mut thumbnail = Command::new(env!("CARGO_BIN_EXE_thumbnail"));
    thumbnail
        .env("THUMBNAIL_LISTEN", "127.0.0.1:0")
        .env("S3_ENDPOINT", moto::url())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("THUMBNAIL_BUCKET", &thumbs)
        .env("THUMBNAIL_MAX_EDGE", "200")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url)
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("RUST_LOG", "warn");
    let (_thumbnail, thumbnail_url) = spawn(thumbnail);
    let display = Sink::ok().await;

    // The example's own configuration, pointed at this test's moto, queue, function, display.
    let config = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/switchyard.yaml"))
        .unwrap()
        .replace("http://127.0.0.1:4566/123456789012/photo-uploads", &queue)
        .replace(
            "waitTimeSeconds: 5",
            &format!("waitTimeSeconds: 1\n    endpoint: '{}'", moto::url()),
        )
        .replace("http://127.0.0.1:9090/", &format!("{thumbnail_url}/"))
        .replace("http://127.0.0.1:9091/", &display.url);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("switchyard.yaml"), config).unwrap();
    let mut serve = Command::new(switchyard_bin());
    serve
        .arg("serve")
        .arg("--config")
        .arg(dir.path().join("switchyard.yaml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url)
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("RUST_LOG", "error");
    let (_serve, base) = spawn(serve);

    // Uploads: a JPEG, a PNG with a space and unicode in its key, a large JPEG, a WebP, a
    // corrupt "JPEG", and a text file (not an image: no trigger takes it).
    // (key, bytes, content type, expected thumbnail size)
    type Upload = (&'static str, Vec<u8>, &'static str, (u32, u32));
    let uploads: Vec<Upload> = vec![
        (
            "cat.jpg",
            image_bytes(640, 480, ImageFormat::Jpeg),
            "image/jpeg",
            (200, 150),
        ),
        (
            "vacances été/plage 1.png",
            image_bytes(300, 600, ImageFormat::Png),
            "image/png",
            (100, 200),
        ),
        (
            "big.jpg",
            image_bytes(4000, 3000, ImageFormat::Jpeg),
            "image/jpeg",
            (200, 150),
        ),
        (
            "logo.webp",
            image_bytes(120, 90, ImageFormat::WebP),
            "image/webp",
            (120, 90),
        ),
    ];
    for (key, bytes, ct, _) in &uploads {
        moto::s3_put(&format!("{photos}/{key}"), ct, bytes.clone()).await;
    }
    let mut corrupt = image_bytes(64, 64, ImageFormat::Jpeg);
    corrupt.truncate(300);
    moto::s3_put(&format!("{photos}/broken.jpg"), "image/jpeg", corrupt).await;
    moto::s3_put(
        &format!("{photos}/notes.txt"),
        "text/plain",
        b"hello".to_vec(),
    )
    .await;

    // One reply per image reaches the second trigger.
    let got = display.wait_for(uploads.len(), WAIT).await;
    let mut subjects: Vec<String> = got
        .iter()
        .map(|r| {
            let e = r.event.as_ref().unwrap();
            assert_eq!(e.ty, "com.example.thumbnail.created");
            e.subject.clone().unwrap()
        })
        .collect();
    subjects.sort();
    let mut expected: Vec<String> = uploads
        .iter()
        .map(|(k, ..)| format!("thumbnails/{k}"))
        .collect();
    expected.sort();
    assert_eq!(subjects, expected);

    // One trace per upload, from the S3Source through the broker's attempt, the function's
    // span, the reply's span and the reply's delivery.
    let cat = got
        .iter()
        .find(|r| r.event.as_ref().unwrap().subject.as_deref() == Some("thumbnails/cat.jpg"))
        .unwrap();
    let (trace, _) = otlp::ids(cat.headers["ce-traceparent"].to_str().unwrap());
    let deadline = tokio::time::Instant::now() + WAIT;
    let spans = loop {
        let spans = receiver.spans_of(&trace);
        if spans
            .iter()
            .any(|s| s.name == "send default/show-thumbnails")
        {
            break spans;
        }
        assert!(tokio::time::Instant::now() < deadline, "{spans:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let named = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no span {name} in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
    };
    let source = spans
        .iter()
        .find(|s| s.name.starts_with("receive S3Source"))
        .unwrap();
    assert!(
        source.parent_span_id.is_empty(),
        "the source starts the trace"
    );
    let attempt = named("send default/make-thumbnails");
    assert_eq!(attempt.parent_span_id, source.span_id);
    let function = named("make thumbnail");
    assert_eq!(
        function.parent_span_id, attempt.span_id,
        "the function nests under the attempt"
    );
    let reply = spans
        .iter()
        .find(|s| otlp::attribute(s, "switchyard.reply").as_deref() == Some("true"))
        .unwrap();
    assert_eq!(
        reply.parent_span_id, function.span_id,
        "the reply continues the function's span"
    );
    // The function gave its reply its own context as the extension, which is kept: the
    // reply's delivery is a child of the function's span, beside the reply's span.
    assert_eq!(
        named("send default/show-thumbnails").parent_span_id,
        function.span_id
    );

    // Each thumbnail exists with the right dimensions and format.
    for (key, _, ct, size) in &uploads {
        let resp = moto::s3_get(&thumbs, &format!("thumbnails/{key}")).await;
        assert!(
            resp.status().is_success(),
            "thumbnail of {key}: {}",
            resp.status()
        );
        let bytes = resp.bytes().await.unwrap();
        let img = image::load_from_memory(&bytes).unwrap();
        assert_eq!((img.width(), img.height()), *size, "{key}");
        let format = image::guess_format(&bytes).unwrap();
        assert_eq!(format.to_mime_type(), *ct, "{key}");
    }

    // The corrupt image is in the dead-letter store with the function's reason.
    let deadline = tokio::time::Instant::now() + WAIT;
    let dead = loop {
        let v: serde_json::Value = c
            .get(format!(
                "{base}/api/v1/namespaces/default/brokers/default/deadletters"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(item) = v["items"].as_array().and_then(|i| i.first()).cloned() {
            break item;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead["trigger"], "make-thumbnails", "{dead}");
    assert_eq!(dead["status"], 422, "{dead}");
    // Its full record has the function's answer and the event.
    let full = c
        .get(format!(
            "{base}/api/v1/namespaces/default/brokers/default/deadletters/{}",
            dead["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        full.contains("corrupt image") && full.contains("broken.jpg"),
        "{full}"
    );

    // Nothing was delivered twice to the display.
    let mut ids = display.ids();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a reply was delivered twice");

    // Fix the file, redrive the dead letter: its thumbnail is made and its reply arrives.
    moto::s3_put(
        &format!("{photos}/broken.jpg"),
        "image/jpeg",
        image_bytes(64, 32, ImageFormat::Jpeg),
    )
    .await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(switchyard_bin())
            .args([
                "dlq",
                "redrive",
                "--server",
                &base,
                "--trigger",
                "make-thumbnails",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The fixed upload's own notification and the redriven event each give a reply.
    let got = display.wait_for(uploads.len() + 2, WAIT).await;
    let broken: Vec<_> = got
        .iter()
        .filter(|r| r.event.as_ref().unwrap().subject.as_deref() == Some("thumbnails/broken.jpg"))
        .collect();
    assert_eq!(broken.len(), 2);
    let bytes = moto::s3_get(&thumbs, "thumbnails/broken.jpg")
        .await
        .bytes()
        .await
        .unwrap();
    let img = image::load_from_memory(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (64, 32));
}
