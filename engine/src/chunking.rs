//! Content-defined chunking.
//!
//! Files are cut with FastCDC (the `fastcdc` crate's v2020 chunker, normal
//! level 1, seed 0) so that an insertion shifts only the chunks around it.
//! The parameters are fixed per repository at `init`: two hosts chunking the
//! same bytes must cut them identically or dedup across nodes is lost, which
//! is why `format-spec/vectors/boundaries.json` pins the boundaries.

use crate::format::config::ChunkerParams;

/// Defaults chosen by measurement on generated ICON node data (see the
/// README's chunk-size table): LevelDB tables (~2 MiB) never change once
/// written, so whole-file identity carries the dedup and smaller chunks buy
/// almost nothing while multiplying store requests.
pub const DEFAULT_PARAMS: ChunkerParams = ChunkerParams {
    min_size: 256 << 10,
    avg_size: 1 << 20,
    max_size: 4 << 20,
};

/// One cut: `len` bytes at `offset` of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub offset: usize,
    pub len: usize,
}

/// The chunk boundaries of `data`. Empty input has no chunks.
pub fn cuts<'a>(data: &'a [u8], params: &ChunkerParams) -> impl Iterator<Item = Cut> + 'a {
    fastcdc::v2020::FastCDC::new(
        data,
        params.min_size as usize,
        params.avg_size as usize,
        params.max_size as usize,
    )
    .map(|c| Cut {
        offset: c.offset,
        len: c.length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ChunkerParams {
        ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
        }
    }

    #[test]
    fn cuts_cover_input_within_bounds() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let all: Vec<Cut> = cuts(&data, &params()).collect();
        let mut next = 0;
        for (i, c) in all.iter().enumerate() {
            assert_eq!(c.offset, next);
            assert!(c.len <= 16384);
            assert!(c.len >= 1024 || i == all.len() - 1);
            next += c.len;
        }
        assert_eq!(next, data.len());
        assert_eq!(cuts(&[], &params()).count(), 0);
    }

    #[test]
    fn an_insertion_moves_only_nearby_boundaries() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let mut edited = data.clone();
        edited.splice(100_000..100_000, *b"inserted");
        let ids = |d: &[u8]| -> Vec<blake3::Hash> {
            cuts(d, &params())
                .map(|c| blake3::hash(&d[c.offset..c.offset + c.len]))
                .collect()
        };
        let (a, b) = (ids(&data), ids(&edited));
        let shared = a.iter().filter(|h| b.contains(h)).count();
        assert!(
            shared + 3 >= a.len(),
            "only {shared} of {} chunks survived",
            a.len()
        );
    }
}
