//! The image work, without I/O: decode (JPEG, PNG, WebP), respect the EXIF orientation, shrink
//! to fit a square of `max_edge` keeping the aspect ratio (never enlarge), encode in the
//! input's format.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder as _, ImageFormat, ImageReader};

/// A thumbnail and what it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// The encoded thumbnail.
    pub bytes: Vec<u8>,
    /// Its media type.
    pub content_type: &'static str,
    /// Its width and height.
    pub size: (u32, u32),
    /// The source image's width and height after orientation.
    pub source_size: (u32, u32),
}

/// Why an input cannot become a thumbnail (the sink answers 4xx: retrying will not help).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not JPEG, PNG or WebP.
    NotAnImage(String),
    /// Looks like an image but does not decode.
    Corrupt(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotAnImage(m) => write!(f, "not a JPEG, PNG or WebP image: {m}"),
            Refusal::Corrupt(m) => write!(f, "corrupt image: {m}"),
        }
    }
}

/// Makes the thumbnail of `input`.
pub fn make(input: &[u8], max_edge: u32) -> Result<Thumbnail, Refusal> {
    let reader = ImageReader::new(Cursor::new(input))
        .with_guessed_format()
        .map_err(|e| Refusal::NotAnImage(e.to_string()))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP)) => f,
        Some(other) => return Err(Refusal::NotAnImage(format!("{other:?}"))),
        None => return Err(Refusal::NotAnImage("unknown format".into())),
    };
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Refusal::Corrupt(e.to_string()))?;
    let orientation = decoder
        .orientation()
        .map_err(|e| Refusal::Corrupt(e.to_string()))?;
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| Refusal::Corrupt(e.to_string()))?;
    img.apply_orientation(orientation);
    let source_size = (img.width(), img.height());
    let thumb = if img.width() <= max_edge && img.height() <= max_edge {
        img
    } else {
        img.thumbnail(max_edge, max_edge)
    };
    let (thumb, content_type) = match format {
        // JPEG has no alpha; WebP's encoder here is lossless RGBA.
        ImageFormat::Jpeg => (DynamicImage::ImageRgb8(thumb.to_rgb8()), "image/jpeg"),
        ImageFormat::WebP => (DynamicImage::ImageRgba8(thumb.to_rgba8()), "image/webp"),
        _ => (thumb, "image/png"),
    };
    let mut out = Cursor::new(Vec::new());
    thumb
        .write_to(&mut out, format)
        .map_err(|e| Refusal::Corrupt(format!("cannot encode the thumbnail: {e}")))?;
    Ok(Thumbnail {
        bytes: out.into_inner(),
        content_type,
        size: (thumb.width(), thumb.height()),
        source_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).expect("encodes");
        out.into_inner()
    }

    #[test]
    fn shrinks_keeping_the_aspect_ratio_in_each_format() {
        let img = DynamicImage::new_rgb8(800, 400);
        for (format, ct) in [
            (ImageFormat::Jpeg, "image/jpeg"),
            (ImageFormat::Png, "image/png"),
            (ImageFormat::WebP, "image/webp"),
        ] {
            let t = make(&encode(&img, format), 200).expect("a thumbnail");
            assert_eq!(
                (t.size, t.source_size, t.content_type),
                ((200, 100), (800, 400), ct)
            );
            assert_eq!(
                image::guess_format(&t.bytes).expect("an image"),
                format,
                "same format out as in"
            );
        }
    }

    /// `jpeg` with an EXIF APP1 segment whose Orientation tag is `o`.
    fn with_orientation(jpeg: &[u8], o: u16) -> Vec<u8> {
        let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
        tiff.extend([0x00, 0x01, 0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1]);
        tiff.extend(o.to_be_bytes());
        tiff.extend([0, 0, 0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(tiff);
        let len = u16::try_from(app1.len() + 2).expect("small");
        let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
        out.extend(len.to_be_bytes());
        out.extend(app1);
        out.extend(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_respected() {
        let jpeg = encode(&DynamicImage::new_rgb8(800, 400), ImageFormat::Jpeg);
        // 6: the camera was turned a quarter; the picture is upright when rotated 90°.
        let t = make(&with_orientation(&jpeg, 6), 200).expect("a thumbnail");
        assert_eq!((t.source_size, t.size), ((400, 800), (100, 200)));
    }

    #[test]
    fn small_images_are_not_enlarged() {
        let img = DynamicImage::new_rgb8(50, 30);
        let t = make(&encode(&img, ImageFormat::Png), 200).expect("a thumbnail");
        assert_eq!(t.size, (50, 30));
    }

    #[test]
    fn text_and_truncated_images_are_refused() {
        assert!(matches!(
            make(b"hello, not an image", 200),
            Err(Refusal::NotAnImage(_))
        ));
        let jpeg = encode(&DynamicImage::new_rgb8(300, 300), ImageFormat::Jpeg);
        assert!(matches!(make(&jpeg[..200], 200), Err(Refusal::Corrupt(_))));
    }
}
