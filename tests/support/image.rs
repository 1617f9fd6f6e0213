//! Decoded PNG figures, for the tests that check what `plot` drew.
#![allow(dead_code)]

use std::path::Path;

/// A decoded RGB image.
pub struct Image {
    pub w: u32,
    pub h: u32,
    pub rgb: Vec<u8>,
}

impl Image {
    pub fn read(p: &Path) -> Image {
        let dec = png::Decoder::new(std::fs::File::open(p).expect("png exists"));
        let mut r = dec.read_info().expect("png header");
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).expect("png data");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        Image {
            w: info.width,
            h: info.height,
            rgb: buf,
        }
    }

    pub fn px(&self, x: i32, y: i32) -> [u8; 3] {
        let i = (y as usize * self.w as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Not blank: a good share of non-white pixels and many distinct colours.
    pub fn assert_not_blank(&self) {
        let px = self.rgb.chunks(3);
        let inked = px.clone().filter(|p| p != &[255, 255, 255]).count();
        let total = (self.w * self.h) as usize;
        assert!(inked * 100 > total, "only {inked} of {total} pixels drawn");
        let distinct: std::collections::BTreeSet<&[u8]> = px.collect();
        assert!(distinct.len() > 20, "only {} colours", distinct.len());
    }

    pub fn count(&self, c: [u8; 3]) -> usize {
        self.rgb.chunks(3).filter(|p| *p == c).count()
    }
}
