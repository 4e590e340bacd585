//! Thumbnails of uploaded images (JPEG, PNG, GIF, WebP).
//!
//! Spec: client-server API "Content repository" → "Thumbnails". `scale`
//! fits the image inside the requested box keeping its aspect ratio (never
//! enlarging); `crop` fills the box exactly and cuts what overflows. Images
//! are decoded with limits on their declared size and on memory, so a
//! malformed file or a decompression bomb is refused before it costs
//! anything. Thumbnails of JPEG sources are JPEG, others PNG (transparency).

use std::io::Cursor;

use image::{imageops::FilterType, DynamicImage, ImageFormat, ImageReader, Limits};

/// Largest width or height of an image we agree to decode.
const MAX_DIMENSION: u32 = 12_000;
/// Most memory a decode may allocate.
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;
/// Largest thumbnail side (bigger requests are served at this size).
pub const MAX_THUMBNAIL_SIDE: u32 = 1600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Scale,
    Crop,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scale => "scale",
            Self::Crop => "crop",
        }
    }
}

/// A thumbnail as a client (or another server) asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThumbnailRequest {
    pub width: u32,
    pub height: u32,
    pub method: Method,
    pub animated: bool,
}

impl ThumbnailRequest {
    /// The query string asking another server for it.
    pub fn query(&self) -> String {
        format!(
            "width={}&height={}&method={}&animated={}",
            self.width,
            self.height,
            self.method.as_str(),
            self.animated
        )
    }

    /// The name a thumbnail another server made for it is cached under
    /// (sizes past the bound make the same thumbnail: one entry for them).
    pub fn cache_label(&self) -> String {
        let (width, height) = bounded_size(self.width, self.height);
        let animated = if self.animated { "-animated" } else { "" };
        format!("{width}x{height}-{}{animated}", self.method.as_str())
    }
}

/// Why no thumbnail could be made.
#[derive(Debug, PartialEq, Eq)]
pub enum ThumbnailError {
    /// Not an image format we thumbnail.
    Unsupported,
    /// Too large, malformed or truncated.
    Refused(String),
}

/// A generated thumbnail.
pub struct Thumbnail {
    pub content: Vec<u8>,
    pub content_type: &'static str,
}

/// The image format of a content type we thumbnail.
pub fn format_of(content_type: &str) -> Option<ImageFormat> {
    match content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase().as_str() {
        "image/jpeg" | "image/jpg" => Some(ImageFormat::Jpeg),
        "image/png" => Some(ImageFormat::Png),
        "image/gif" => Some(ImageFormat::Gif),
        "image/webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// The size actually made for a requested one (each side within 1..=1600).
pub fn bounded_size(width: u32, height: u32) -> (u32, u32) {
    (width.clamp(1, MAX_THUMBNAIL_SIDE), height.clamp(1, MAX_THUMBNAIL_SIDE))
}

/// Makes a `width`×`height` thumbnail of `content` (of type `content_type`).
/// `Ok(None)`: with `scale`, the image already fits (serve the original).
pub fn make(
    content: &[u8],
    content_type: &str,
    width: u32,
    height: u32,
    method: Method,
) -> Result<Option<Thumbnail>, ThumbnailError> {
    let format = format_of(content_type).ok_or(ThumbnailError::Unsupported)?;
    let (width, height) = bounded_size(width, height);
    let mut reader = ImageReader::with_format(Cursor::new(content), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| ThumbnailError::Refused(e.to_string()))?;
    if method == Method::Scale && image.width() <= width && image.height() <= height {
        return Ok(None);
    }
    let resized = match method {
        Method::Scale => image.resize(width, height, FilterType::Triangle),
        Method::Crop => image.resize_to_fill(width, height, FilterType::Triangle),
    };
    encode(resized, format).map(Some)
}

fn encode(image: DynamicImage, source: ImageFormat) -> Result<Thumbnail, ThumbnailError> {
    let mut out = Cursor::new(Vec::new());
    let refused = |e: image::ImageError| ThumbnailError::Refused(e.to_string());
    let content_type = if source == ImageFormat::Jpeg {
        DynamicImage::ImageRgb8(image.to_rgb8()).write_to(&mut out, ImageFormat::Jpeg).map_err(refused)?;
        "image/jpeg"
    } else {
        image.write_to(&mut out, ImageFormat::Png).map_err(refused)?;
        "image/png"
    };
    Ok(Thumbnail { content: out.into_inner(), content_type })
}

/// A `width`×`height` transparent PNG (tests and fuzz seeds).
pub fn blank_png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    // Encoding an in-memory RGBA buffer to PNG cannot fail.
    let _ = DynamicImage::new_rgba8(width, height).write_to(&mut out, ImageFormat::Png);
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dimensions(thumbnail: &Thumbnail) -> (u32, u32) {
        let image = image::load_from_memory(&thumbnail.content).unwrap();
        (image.width(), image.height())
    }

    #[test]
    fn scale_keeps_the_aspect_ratio_and_crop_fills_the_box() {
        let source = blank_png(400, 200);
        let scaled = make(&source, "image/png", 100, 100, Method::Scale).unwrap().unwrap();
        assert_eq!(dimensions(&scaled), (100, 50));
        assert_eq!(scaled.content_type, "image/png");
        let cropped = make(&source, "image/png", 96, 96, Method::Crop).unwrap().unwrap();
        assert_eq!(dimensions(&cropped), (96, 96));
        assert!(make(&source, "image/png", 800, 600, Method::Scale).unwrap().is_none(), "never enlarged");
    }

    #[test]
    fn non_images_malformed_files_and_bombs_are_refused() {
        assert_eq!(make(b"hello", "text/plain", 32, 32, Method::Crop).err(), Some(ThumbnailError::Unsupported));
        assert!(matches!(make(b"not a png", "image/png", 32, 32, Method::Crop), Err(ThumbnailError::Refused(_))));
        let mut truncated = blank_png(64, 64);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(make(&truncated, "image/png", 32, 32, Method::Crop), Err(ThumbnailError::Refused(_))));
        // A PNG header declaring 100,000 × 100,000 pixels: refused before decoding.
        let mut bomb = blank_png(1, 1);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(matches!(make(&bomb, "image/png", 32, 32, Method::Crop), Err(ThumbnailError::Refused(_))));
    }
}
