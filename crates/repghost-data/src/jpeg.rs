//! JPEG decoding through libjpeg-turbo's TurboJPEG API (vendored by `mozjpeg-sys`), with the
//! settings Pillow uses: accurate integer IDCT, fancy chroma upsampling. Pillow reads Adobe
//! CMYK JPEGs inverted and converts CMYK to RGB with its own formula; we do the same.

use std::ffi::{c_char, c_int, c_uchar, c_ulong, c_void, CStr};

use crate::image::Image;

// TurboJPEG 2 API (turbojpeg.h); compiled into mozjpeg-sys by its `turbojpeg_api` feature.
extern "C" {
    fn tjInitDecompress() -> *mut c_void;
    fn tjDecompressHeader3(
        handle: *mut c_void,
        jpeg: *const c_uchar,
        size: c_ulong,
        width: *mut c_int,
        height: *mut c_int,
        subsamp: *mut c_int,
        colorspace: *mut c_int,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    fn tjDecompress2(
        handle: *mut c_void,
        jpeg: *const c_uchar,
        size: c_ulong,
        dst: *mut c_uchar,
        width: c_int,
        pitch: c_int,
        height: c_int,
        pixel_format: c_int,
        flags: c_int,
    ) -> c_int;
    fn tjGetErrorStr2(handle: *mut c_void) -> *mut c_char;
    fn tjDestroy(handle: *mut c_void) -> c_int;
}

// The static library that holds the symbols above.
use mozjpeg_sys as _;

const TJPF_RGB: c_int = 0;
const TJPF_CMYK: c_int = 11;
const TJCS_CMYK: c_int = 3;
const TJCS_YCCK: c_int = 4;

struct Handle(*mut c_void);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitDecompress and is destroyed once.
        unsafe { tjDestroy(self.0) };
    }
}

impl Handle {
    fn error(&self) -> String {
        // SAFETY: tjGetErrorStr2 returns a NUL-terminated string owned by the handle.
        unsafe {
            CStr::from_ptr(tjGetErrorStr2(self.0))
                .to_string_lossy()
                .into_owned()
        }
    }
}

/// Decodes a JPEG to RGB as Pillow would (before any EXIF rotation).
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<Image, String> {
    // SAFETY: plain constructor; null on failure.
    let h = Handle(unsafe { tjInitDecompress() });
    if h.0.is_null() {
        return Err("cannot initialise the JPEG decoder".into());
    }
    let (mut w, mut ht, mut sub, mut cs) = (0, 0, 0, 0);
    let size = bytes.len() as c_ulong;
    // SAFETY: the buffer is valid for `size` bytes; outputs are valid pointers.
    let r = unsafe { tjDecompressHeader3(h.0, bytes.as_ptr(), size, &mut w, &mut ht, &mut sub, &mut cs) };
    if r != 0 {
        return Err(format!("corrupt JPEG: {}", h.error()));
    }
    if w <= 0 || ht <= 0 {
        return Err("corrupt JPEG: no image dimensions".into());
    }
    let (w, ht) = (w as usize, ht as usize);
    if (w as u64) * (ht as u64) > max_pixels {
        return Err(format!(
            "JPEG declares {w}x{ht} pixels, more than the {max_pixels} allowed"
        ));
    }
    let cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    let channels = if cmyk { 4 } else { 3 };
    let mut buf = vec![0u8; w * ht * channels];
    let fmt = if cmyk { TJPF_CMYK } else { TJPF_RGB };
    // SAFETY: `buf` holds width × height × channels bytes, matching pitch 0 (packed) and the
    // pixel format requested.
    let r = unsafe {
        tjDecompress2(
            h.0,
            bytes.as_ptr(),
            size,
            buf.as_mut_ptr(),
            w as c_int,
            0,
            ht as c_int,
            fmt,
            0,
        )
    };
    if r != 0 {
        // libjpeg-turbo reports truncated data as a warning and fills the rest with grey;
        // Pillow refuses such files ("image file is truncated"), and so do we.
        return Err(format!("corrupt or truncated JPEG: {}", h.error()));
    }
    if !cmyk {
        return Ok(Image {
            width: w,
            height: ht,
            channels: 3,
            data: buf,
        });
    }
    Ok(Image {
        width: w,
        height: ht,
        channels: 3,
        data: cmyk_to_rgb(&buf, adobe_inverted(bytes)),
    })
}

/// Whether the file has an Adobe APP14 marker: libjpeg then returns inverted CMYK, which
/// Pillow undoes (raw mode `CMYK;I`).
fn adobe_inverted(bytes: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= bytes.len() && bytes[i] == 0xFF {
        let marker = bytes[i + 1];
        if marker == 0xDA {
            break; // start of scan: no more headers
        }
        let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        if marker == 0xEE && bytes.get(i + 4..i + 9) == Some(b"Adobe") {
            return true;
        }
        i += 2 + len;
    }
    false
}

/// Pillow's `cmyk2rgb`: `R = (255 − K) − MULDIV255(C, 255 − K)`.
fn cmyk_to_rgb(cmyk: &[u8], inverted: bool) -> Vec<u8> {
    let muldiv255 = |a: u32, b: u32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for p in cmyk.chunks_exact(4) {
        let p: [u32; 4] = [p[0], p[1], p[2], p[3]].map(|v| if inverted { 255 - v as u32 } else { v as u32 });
        let nk = 255 - p[3];
        for &c in &p[..3] {
            out.push((nk - muldiv255(c, nk)) as u8);
        }
    }
    out
}
