//! MXFP4 (a data format of safetensors files, read by `base` and written by `synth`) as the gpt-oss checkpoint stores its experts (docs/base.md): E2M1 values, two per byte,
//! low nibble first, 32 values (16 bytes) per block sharing one E8M0 scale 2^(s−127). Blocks run
//! along the last (input) dimension: `_blocks` (E, rows, G, 16) and `_scales` (E, rows, G)
//! decode to (E, rows, 32·G), the (out × in) matrix of each expert.

/// E2M1 magnitudes by the low three bits of a nibble; bit 3 is the sign (transformers'
/// `FP4_VALUES`).
pub const E2M1: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
/// Bytes per block of 32 values.
pub const BLOCK_BYTES: usize = 16;
/// Values per block.
pub const BLOCK: usize = 32;

/// The value of one nibble.
pub fn nibble(n: u8) -> f32 {
    let m = E2M1[(n & 7) as usize];
    if n & 8 != 0 {
        -m
    } else {
        m
    }
}

/// 2^(s−127) for an E8M0 scale byte; 255 is NaN in the OCP MX format (the reference decoders do
/// not special-case it, but no finite number means anything there).
pub fn scale(s: u8) -> f64 {
    if s == 255 {
        f64::NAN
    } else {
        // 2^(s−127) built from its exponent bits (exact; powi was a visible share of a decode).
        f64::from_bits(((s as u64) + 1023 - 127) << 52)
    }
}

/// 4·(lo² + hi²) of the two values of each byte, an integer (E2M1 squares are multiples of
/// 1/4): ‖block‖² = 4^(s−127)·Σ SQ4[byte]/4, summed in integers, exactly.
const SQ4: [u32; 256] = {
    const SQ: [u32; 8] = [0, 1, 4, 9, 16, 36, 64, 144];
    let mut t = [0u32; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = SQ[b & 7] + SQ[(b >> 4) & 7];
        b += 1;
    }
    t
};

/// The two values of each byte (low nibble first), unscaled.
static PAIRS: std::sync::LazyLock<[[f64; 2]; 256]> = std::sync::LazyLock::new(|| {
    std::array::from_fn(|b| [nibble(b as u8 & 0x0F) as f64, nibble(b as u8 >> 4) as f64])
});

/// Decodes one row: `blocks` (G·16 bytes) and `scales` (G bytes) into `out` (32·G values).
pub fn decode_row(blocks: &[u8], scales: &[u8], out: &mut [f64]) {
    let pairs = &*PAIRS;
    for ((blk, &s), dst) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(scales)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let f = scale(s);
        for (&b, d) in blk.iter().zip(dst.chunks_exact_mut(2)) {
            let [lo, hi] = pairs[b as usize];
            d[0] = lo * f;
            d[1] = hi * f;
        }
    }
}

/// ‖row‖² without decoding it: per block, an integer table sum times 4^(s−127)/4 (the whole
/// base's ‖W‖_F reads ~10 GB, so this loop is the cost of `relative_change`).
pub fn row_sq_norm(blocks: &[u8], scales: &[u8]) -> f64 {
    blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(scales)
        .map(|(blk, &s)| {
            let f = scale(s);
            let n: u32 = blk.iter().map(|&b| SQ4[b as usize]).sum();
            f * f * 0.25 * n as f64
        })
        .sum()
}

/// The nearest code of `x / 2^(s−127)` (for synthetic bases and round trips), as a nibble.
pub fn encode(x: f64, s: u8) -> u8 {
    let v = x / scale(s);
    let (sign, a) = if v < 0.0 { (8u8, -v) } else { (0u8, v) };
    let code = (0..8u8)
        .min_by(|&i, &j| {
            (E2M1[i as usize] as f64 - a)
                .abs()
                .total_cmp(&(E2M1[j as usize] as f64 - a).abs())
        })
        .unwrap_or(0);
    sign | code
}

#[cfg(test)]
mod tests {
    use super::*;

    /// E2M1 from its bit fields (1 sign, 2 exponent with bias 1, 1 mantissa; exponent 0 is
    /// subnormal), independent of the table.
    fn e2m1_reference(n: u8) -> f64 {
        let sign = if n & 8 != 0 { -1.0 } else { 1.0 };
        let (e, m) = (((n >> 1) & 3) as i32, (n & 1) as f64);
        let mag = if e == 0 {
            m * 0.5
        } else {
            2f64.powi(e - 1) * (1.0 + m / 2.0)
        };
        sign * mag
    }

    #[test]
    fn every_byte_and_scale_decodes_like_the_bit_field_reference() {
        for s in [0u8, 1, 100, 120, 126, 127, 128, 140, 200, 254] {
            for b in 0..=255u8 {
                // One block whose byte j is b + j: every byte value lands at every position.
                let blk: Vec<u8> = (0..16).map(|j| b.wrapping_add(j)).collect();
                let mut out = [0.0; 32];
                decode_row(&blk, &[s], &mut out);
                let f = 2f64.powi(s as i32 - 127);
                for (j, &byte) in blk.iter().enumerate() {
                    assert_eq!(
                        out[2 * j],
                        e2m1_reference(byte & 0x0F) * f,
                        "lo {byte} s {s}"
                    );
                    assert_eq!(
                        out[2 * j + 1],
                        e2m1_reference(byte >> 4) * f,
                        "hi {byte} s {s}"
                    );
                }
                let sq: f64 = out.iter().map(|x| x * x).sum();
                let fast = row_sq_norm(&blk, &[s]);
                assert!(
                    (fast - sq).abs() <= 1e-12 * sq.max(f64::MIN_POSITIVE),
                    "{fast} {sq}"
                );
            }
        }
    }

    #[test]
    fn a_nan_scale_gives_nan_not_a_number() {
        let mut out = [0.0; 32];
        decode_row(&[0x11; 16], &[255], &mut out);
        assert!(out.iter().all(|x| x.is_nan()));
        assert!(row_sq_norm(&[0x11; 16], &[255]).is_nan());
    }

    #[test]
    fn encode_round_trips_every_code() {
        for s in [120u8, 127, 130] {
            for n in 0..16u8 {
                let x = nibble(n) as f64 * scale(s);
                // −0 and +0 are one value.
                assert_eq!(nibble(encode(x, s)) as f64 * scale(s), x, "{n} {s}");
            }
        }
    }
}
