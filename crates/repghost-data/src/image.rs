//! Decoding any common image file into 8-bit RGB the way Pillow's `convert("RGB")` does,
//! with the EXIF orientation applied.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader};

/// An 8-bit image, rows of interleaved channels (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    pub data: Vec<u8>,
}

/// Images larger than this many pixels are refused before decoding (a 100000×100000 header
/// must not allocate 30 GB).
pub const MAX_PIXELS: u64 = 1 << 28;

impl Image {
    /// Pillow's `convert("L")`: ITU-R 601-2 luma in 16-bit fixed point.
    pub fn to_grey(&self) -> Image {
        if self.channels == 1 {
            return self.clone();
        }
        let data = self
            .data
            .chunks_exact(3)
            .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
            .collect();
        Image {
            width: self.width,
            height: self.height,
            channels: 1,
            data,
        }
    }

    /// Grey replicated to three channels (Pillow `L` → `RGB`).
    pub fn to_rgb(&self) -> Image {
        if self.channels == 3 {
            return self.clone();
        }
        let data = self.data.iter().flat_map(|&v| [v, v, v]).collect();
        Image {
            width: self.width,
            height: self.height,
            channels: 3,
            data,
        }
    }
}

/// Decodes JPEG (incl. CMYK and progressive), PNG (8/16-bit, palette, grey, alpha), WebP,
/// BMP, TIFF and GIF (first frame) into RGB.
pub fn decode(bytes: &[u8]) -> Result<Image, String> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        let img = crate::jpeg::decode(bytes, MAX_PIXELS)?;
        return Ok(apply_orientation(img, jpeg_orientation(bytes)));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read image: {e}"))?;
    if reader.format().is_none() {
        return Err("not an image in a supported format (JPEG, PNG, WebP, BMP, TIFF, GIF)".into());
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| format!("cannot decode image: {e}"))?;
    let (w, h) = decoder.dimensions();
    check_size(w as u64, h as u64)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| format!("corrupt or truncated image: {e}"))?;
    img.apply_orientation(orientation);
    Ok(to_pillow_rgb(img))
}

fn check_size(w: u64, h: u64) -> Result<(), String> {
    if w == 0 || h == 0 {
        return Err("image has no pixels".into());
    }
    if w.saturating_mul(h) > MAX_PIXELS {
        return Err(format!(
            "image declares {w}x{h} pixels, more than the {MAX_PIXELS} allowed"
        ));
    }
    Ok(())
}

/// Pillow's conversions to RGB: alpha is dropped (not composited); 16-bit colour keeps the
/// high byte (Pillow unpacks `RGB;16B`); 16-bit grey is *clipped* to 255, because Pillow
/// opens it as mode `I;16` and converts that to `RGB` by saturation.
fn to_pillow_rgb(img: DynamicImage) -> Image {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data: Vec<u8> = match img {
        DynamicImage::ImageLuma8(b) => b.into_raw().into_iter().flat_map(|v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageRgba8(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        DynamicImage::ImageLuma16(b) => b
            .into_raw()
            .into_iter()
            .flat_map(|v| {
                let v = v.min(255) as u8;
                [v, v, v]
            })
            .collect(),
        DynamicImage::ImageLumaA16(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| {
                let v = (p[0] >> 8) as u8;
                [v, v, v]
            })
            .collect(),
        DynamicImage::ImageRgb16(b) => b.into_raw().into_iter().map(|v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]].map(|v| (v >> 8) as u8))
            .collect(),
        other => other.to_rgb8().into_raw(),
    };
    Image {
        width: w,
        height: h,
        channels: 3,
        data,
    }
}

/// The EXIF orientation of a JPEG, read from its headers only.
fn jpeg_orientation(bytes: &[u8]) -> Orientation {
    ImageReader::with_format(Cursor::new(bytes), image::ImageFormat::Jpeg)
        .into_decoder()
        .ok()
        .and_then(|mut d| d.orientation().ok())
        .unwrap_or(Orientation::NoTransforms)
}

fn apply_orientation(img: Image, o: Orientation) -> Image {
    if o == Orientation::NoTransforms {
        return img;
    }
    let buf = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data).expect("sizes agree");
    let mut d = DynamicImage::ImageRgb8(buf);
    d.apply_orientation(o);
    Image {
        width: d.width() as usize,
        height: d.height() as usize,
        channels: 3,
        data: d.into_rgb8().into_raw(),
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(w.to_be_bytes());
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        let mut crc = flate2::Crc::new();
        crc.update(&ihdr);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(13u32.to_be_bytes());
        png.extend(&ihdr);
        png.extend(crc.sum().to_be_bytes());
        // An IDAT holding an empty zlib stream, so that readers get past the header.
        let mut idat = b"IDAT".to_vec();
        idat.extend([0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        let mut crc = flate2::Crc::new();
        crc.update(&idat);
        png.extend(8u32.to_be_bytes());
        png.extend(&idat);
        png.extend(crc.sum().to_be_bytes());
        png.extend(0u32.to_be_bytes());
        png.extend(b"IEND");
        png.extend(0xAE42_6082u32.to_be_bytes());
        png
    }

    #[test]
    fn absurd_dimensions_are_refused_before_decoding() {
        let err = decode(&png_header(100_000, 100_000)).unwrap_err();
        assert!(err.contains("100000x100000"), "{err}");
        // JPEG: SOI, then a baseline SOF0 declaring 60000×60000, three components.
        let mut jpg = vec![
            0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0xEA, 0x60, 0xEA, 0x60, 0x03,
        ];
        jpg.extend([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        // A start of scan, so that the header parse completes, then the end.
        jpg.extend([
            0xFF, 0xDA, 0x00, 0x0C, 0x03, 0x01, 0x00, 0x02, 0x11, 0x03, 0x11, 0x00, 0x3F, 0x00,
        ]);
        jpg.extend([0xFF, 0xD9]);
        let err = decode(&jpg).unwrap_err();
        assert!(err.contains("60000"), "{err}");
    }
}
