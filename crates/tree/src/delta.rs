//! Deltas for large changed files without server-side computation (the zsync direction of the
//! rsync algorithm, DESIGN §3 "large changed files may travel as rsync deltas").
//!
//! At index time the store publishes, next to every large *raw* blob, a block signature of
//! its content: `STORE/sigs/ab/HASH` = `EDSIG1\n`, block size (u32 LE), payload length (u64
//! LE), then per block a rolling checksum (u32 LE) and the first 16 bytes of its BLAKE3. An
//! upgrading host rolls the checksum over its own old copy of the file, takes every block it
//! finds there, and fetches only the missing byte ranges of the raw blob (`Range` requests on
//! `/trees/blobs/…`, which any static server supports). The result is checked against the
//! file's full BLAKE3 like any other content, so a weak-checksum collision or a stale
//! signature can only make the delta fail (and the plain blob be fetched), never install
//! wrong bytes. Compressed blobs get no signature: their bytes are not addressable by content
//! offset. Large incompressible files (initramfs images, compressed archives) are exactly the
//! ones raw in the store and the ones that change between versions.

use std::collections::HashMap;
use std::io::Read;

use crate::manifest::Hash;
use crate::{Error, Result};

pub const SIG_MAGIC: &[u8; 7] = b"EDSIG1\n";
/// Files from this size on get a signature (below it the whole blob is one cheap request).
pub const MIN_SIZE: u64 = 1 << 20;
/// Block size: 30 MB → 7.5k blocks, a 150 KB signature.
pub const BLOCK: usize = 4096;
const STRONG: usize = 16;

/// rsync's rolling checksum of a block: `a` = sum of bytes, `b` = sum of `a` prefixes.
#[derive(Clone, Copy)]
struct Rolling {
    a: u32,
    b: u32,
    len: u32,
}

impl Rolling {
    fn new(block: &[u8]) -> Rolling {
        let mut a = 0u32;
        let mut b = 0u32;
        for &x in block {
            a = a.wrapping_add(x as u32);
            b = b.wrapping_add(a);
        }
        Rolling {
            a,
            b,
            len: block.len() as u32,
        }
    }
    fn digest(&self) -> u32 {
        (self.a & 0xffff) | (self.b << 16)
    }
    /// Slide one byte: `out` leaves at the front, `inp` enters at the back.
    fn roll(&mut self, out: u8, inp: u8) {
        self.a = self.a.wrapping_sub(out as u32).wrapping_add(inp as u32);
        self.b = self
            .b
            .wrapping_sub(self.len.wrapping_mul(out as u32))
            .wrapping_add(self.a);
    }
}

fn strong(block: &[u8]) -> [u8; STRONG] {
    blake3::hash(block).as_bytes()[..STRONG].try_into().unwrap()
}

/// The signature of `payload` (read to its end).
pub fn signature(mut payload: impl Read) -> std::io::Result<Vec<u8>> {
    let mut out = SIG_MAGIC.to_vec();
    out.extend_from_slice(&(BLOCK as u32).to_le_bytes());
    let len_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let mut n = 0;
        while n < BLOCK {
            match payload.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        out.extend_from_slice(&Rolling::new(&buf[..n]).digest().to_le_bytes());
        out.extend_from_slice(&strong(&buf[..n]));
        total += n as u64;
        if n < BLOCK {
            break;
        }
    }
    out[len_at..len_at + 8].copy_from_slice(&total.to_le_bytes());
    Ok(out)
}

pub struct Signature {
    block: usize,
    len: u64,
    blocks: Vec<(u32, [u8; STRONG])>,
}

impl Signature {
    pub fn parse(b: &[u8]) -> Result<Signature> {
        let bad = || Error::Format("bad block signature".into());
        let rest = b.strip_prefix(&SIG_MAGIC[..]).ok_or_else(bad)?;
        if rest.len() < 12 {
            return Err(bad());
        }
        let block = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let len = u64::from_le_bytes(rest[4..12].try_into().unwrap());
        let body = &rest[12..];
        if block == 0 || block > 1 << 20 || body.len() % (4 + STRONG) != 0 {
            return Err(bad());
        }
        let blocks: Vec<_> = body
            .chunks_exact(4 + STRONG)
            .map(|c| {
                (
                    u32::from_le_bytes(c[..4].try_into().unwrap()),
                    c[4..].try_into().unwrap(),
                )
            })
            .collect();
        if blocks.len() as u64 != len.div_ceil(block as u64) {
            return Err(bad());
        }
        Ok(Signature { block, len, blocks })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn block_range(&self, i: usize) -> (usize, usize) {
        let s = i * self.block;
        (s, (s + self.block).min(self.len as usize))
    }

    /// Rebuild the new payload from `old` plus fetched ranges: `fetch(ranges)` returns the
    /// new payload's bytes `start..end` of each range asked (the caller maps them onto the
    /// blob; over HTTP one multi-range request). The missing ranges go in up to `par` groups
    /// at once, each of at most `GROUP_RANGES` ranges and about `GROUP_BYTES` bytes; missing
    /// blocks closer than `gap` are fetched as one range. Returns the payload and how many
    /// bytes were fetched; the caller checks the payload's hash.
    pub fn patch(
        &self,
        old: &[u8],
        gap: usize,
        par: usize,
        fetch: impl Fn(&[(u64, u64)]) -> Result<Vec<Vec<u8>>> + Sync,
    ) -> Result<(Vec<u8>, u64)> {
        const GROUP_RANGES: usize = 64;
        const GROUP_BYTES: usize = 4 << 20;
        let found = self.find(old);
        let ranges: Vec<(u64, u64)> = self
            .missing(&found, gap)
            .into_iter()
            .map(|(s, e)| (s as u64, e as u64))
            .collect();
        // Enough groups to keep `par` requests busy, none larger than the caps.
        let per_group = ranges.len().div_ceil(par.max(1)).clamp(1, GROUP_RANGES);
        let mut groups: Vec<&[(u64, u64)]> = Vec::new();
        let mut rest = &ranges[..];
        while !rest.is_empty() {
            let mut n = 0;
            let mut bytes = 0;
            while n < rest.len() && n < per_group && (n == 0 || bytes < GROUP_BYTES) {
                bytes += (rest[n].1 - rest[n].0) as usize;
                n += 1;
            }
            groups.push(&rest[..n]);
            rest = &rest[n..];
        }
        type Slot = std::sync::Mutex<Option<Result<Vec<Vec<u8>>>>>;
        let got: Vec<Slot> = groups.iter().map(|_| Default::default()).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..par.clamp(1, groups.len().max(1)) {
                scope.spawn(|| loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(group) = groups.get(n) else {
                        return;
                    };
                    let r = fetch(group);
                    let failed = r.is_err();
                    *got[n].lock().unwrap() = Some(r);
                    if failed {
                        next.store(groups.len(), std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                });
            }
        });
        let mut out = vec![0u8; self.len as usize];
        for (i, at) in found.iter().enumerate() {
            if let Some(at) = at {
                let (s, e) = self.block_range(i);
                out[s..e].copy_from_slice(&old[*at..*at + (e - s)]);
            }
        }
        let mut fetched = 0u64;
        for (group, g) in groups.iter().zip(got) {
            let parts = g
                .into_inner()
                .unwrap()
                .unwrap_or_else(|| Err(Error::Other("delta range not fetched".into())))?;
            if parts.len() != group.len() {
                return Err(Error::Integrity("delta ranges missing".into()));
            }
            for (&(s, e), bytes) in group.iter().zip(parts) {
                let (s, e) = (s as usize, e as usize);
                if bytes.len() != e - s {
                    return Err(Error::Integrity("short delta range".into()));
                }
                out[s..e].copy_from_slice(&bytes);
                fetched += (e - s) as u64;
            }
        }
        Ok((out, fetched))
    }

    /// For every block of the new payload, an offset in `old` holding the same bytes. `old`
    /// is scanned in parallel slices of at least `SCAN_SLICE` bytes; a block found in two
    /// slices keeps the first offset.
    fn find(&self, old: &[u8]) -> Vec<Option<usize>> {
        use rayon::prelude::*;
        const SCAN_SLICE: usize = 4 << 20;
        let n = self.blocks.len();
        let mut found: Vec<Option<usize>> = vec![None; n];
        let bs = self.block;
        // Only whole blocks can be found by the rolling window.
        let whole = || {
            self.blocks
                .iter()
                .enumerate()
                .filter(move |&(i, _)| self.block_range(i).1 - self.block_range(i).0 == bs)
        };
        let mut by_weak: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, (w, _)) in whole() {
            by_weak.entry(*w).or_default().push(i);
        }
        if old.len() < bs || by_weak.is_empty() {
            return found;
        }
        let filter = WeakFilter::new(by_weak.keys().copied(), by_weak.len());
        // Window start positions are 0..=old.len() - bs.
        let starts = old.len() - bs + 1;
        let slices = (starts / SCAN_SLICE).clamp(1, rayon::current_num_threads().max(1) * 4);
        let per = starts.div_ceil(slices);
        let hits: Vec<Vec<(usize, usize)>> = (0..slices)
            .into_par_iter()
            .map(|k| {
                let from = k * per;
                let to = ((k + 1) * per).min(starts);
                self.scan(old, from, to, &by_weak, &filter)
            })
            .collect();
        for (i, pos) in hits.into_iter().flatten() {
            found[i].get_or_insert(pos);
        }
        found
    }

    /// Roll the window over start positions `from..to` of `old`; (block, offset) of each hit.
    /// After a hit the window jumps a whole block (the next block of a matching run is most
    /// likely right behind it), as rsync does.
    fn scan(
        &self,
        old: &[u8],
        from: usize,
        to: usize,
        by_weak: &HashMap<u32, Vec<usize>>,
        filter: &WeakFilter,
    ) -> Vec<(usize, usize)> {
        let bs = self.block;
        let mut out = Vec::new();
        let mut seen = vec![false; self.blocks.len()];
        if from >= to {
            return out;
        }
        let mut pos = from;
        let mut r = Rolling::new(&old[pos..pos + bs]);
        loop {
            let d = r.digest();
            let mut hit = false;
            if filter.may_contain(d) {
                if let Some(cands) = by_weak.get(&d) {
                    let s = strong(&old[pos..pos + bs]);
                    for &i in cands {
                        if !seen[i] && self.blocks[i].1 == s {
                            seen[i] = true;
                            out.push((i, pos));
                            hit = true;
                        }
                    }
                }
            }
            if hit {
                pos += bs;
                if pos >= to {
                    return out;
                }
                r = Rolling::new(&old[pos..pos + bs]);
            } else {
                if pos + 1 >= to {
                    return out;
                }
                r.roll(old[pos], old[pos + bs]);
                pos += 1;
            }
        }
    }

    /// Byte ranges of the new payload to fetch: runs of missing blocks, joined across runs of
    /// found blocks shorter than `gap` bytes.
    fn missing(&self, found: &[Option<usize>], gap: usize) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        for (i, f) in found.iter().enumerate() {
            if f.is_some() {
                continue;
            }
            let (s, e) = self.block_range(i);
            match out.last_mut() {
                Some(last) if s <= last.1 + gap => last.1 = e,
                _ => out.push((s, e)),
            }
        }
        out
    }
}

/// One bit per slot of a table kept in cache, keyed by the weak digest: almost every window
/// position of a changed region matches no block, and this answers "no" for it in a few
/// nanoseconds where a hash-map lookup took ~25 (a 30 MB initramfs: 0.78 s → see bench/tree.sh).
struct WeakFilter {
    bits: Vec<u64>,
    shift: u32,
}

impl WeakFilter {
    fn new(digests: impl Iterator<Item = u32>, count: usize) -> WeakFilter {
        // ~64 slots per digest (false positives ~1.5%), between 8 KiB and 2 MiB of bits.
        let log2 = (count.max(1) * 64)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(16, 24);
        let mut f = WeakFilter {
            bits: vec![0; 1 << (log2 - 6)],
            shift: 32 - log2,
        };
        for d in digests {
            let s = f.slot(d);
            f.bits[s >> 6] |= 1 << (s & 63);
        }
        f
    }

    fn slot(&self, d: u32) -> usize {
        // Fibonacci hashing: the digest's low half is a plain byte sum, poorly spread.
        (d.wrapping_mul(0x9E37_79B1) >> self.shift) as usize
    }

    fn may_contain(&self, d: u32) -> bool {
        let s = self.slot(d);
        self.bits[s >> 6] & (1 << (s & 63)) != 0
    }
}

/// Store path component of a signature: `sigs/ab/HASH`.
pub fn sig_route(h: &Hash) -> String {
    let x = crate::manifest::hex(h);
    format!("sigs/{}/{x}", &x[..2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn rolling_equals_fresh() {
        let d = noise(10_000, 7);
        let mut r = Rolling::new(&d[..BLOCK]);
        for p in 0..1000 {
            r.roll(d[p], d[p + BLOCK]);
            assert_eq!(r.digest(), Rolling::new(&d[p + 1..p + 1 + BLOCK]).digest());
        }
    }

    #[test]
    fn patch_rebuilds_with_shifted_and_changed_content() {
        let old = noise(300_000, 1);
        // New: an insertion at the front (shifts everything), a changed middle, a new tail.
        let mut new = noise(777, 2);
        new.extend_from_slice(&old[..150_000]);
        new.extend_from_slice(&noise(20_000, 3));
        new.extend_from_slice(&old[170_000..]);
        new.extend_from_slice(&noise(1234, 4));
        let sig = Signature::parse(&signature(&new[..]).unwrap()).unwrap();
        assert_eq!(sig.len(), new.len() as u64);
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let serve = |ranges: &[(u64, u64)]| -> Result<Vec<Vec<u8>>> {
            Ok(ranges
                .iter()
                .map(|&(s, e)| new[s as usize..e as usize].to_vec())
                .collect())
        };
        let (out, fetched) = sig
            .patch(&old, 16 << 10, 4, |r| {
                asked.fetch_add(r.len(), std::sync::atomic::Ordering::SeqCst);
                serve(r)
            })
            .unwrap();
        assert_eq!(out, new);
        assert!(fetched < 40_000, "fetched {fetched}");
        let asked = asked.into_inner();
        assert!(asked <= 4, "{asked} requests");
        // Nothing in common: everything fetched, still right.
        let (out, fetched) = sig.patch(&noise(50_000, 9), 0, 4, serve).unwrap();
        assert_eq!(out, new);
        assert_eq!(fetched, new.len() as u64);
        // A source that answers a group with fewer ranges than asked fails the patch.
        let short = sig.patch(&old, 0, 4, |r| Ok(serve(r)?.into_iter().skip(1).collect()));
        assert!(short.is_err());
    }

    #[test]
    fn find_across_scan_slices_matches_a_single_pass() {
        // 9 MiB of old data: several parallel slices; the new file takes blocks from both
        // sides of every slice boundary, at unaligned offsets, plus duplicated zero blocks.
        let old = noise(9 << 20, 11);
        let mut new = Vec::new();
        // (9 MiB of windows in two slices: the boundary is near 4.5 MiB.)
        for &at in &[
            17usize,
            (4 << 20) - 1000,
            (9 << 19) - 5000,
            (8 << 20) + 4095,
            1 << 20,
        ] {
            new.extend_from_slice(&old[at..at + 3 * BLOCK]);
        }
        new.extend_from_slice(&[0u8; 2 * BLOCK]);
        new.extend_from_slice(&noise(5000, 12));
        let mut old_z = old.clone();
        old_z[(6 << 20) + 100..(6 << 20) + 100 + BLOCK].fill(0);
        let sig = Signature::parse(&signature(&new[..]).unwrap()).unwrap();
        let found = sig.find(&old_z);
        for (i, f) in found.iter().enumerate() {
            if let Some(at) = f {
                let (s, e) = sig.block_range(i);
                assert_eq!(&old_z[*at..*at + (e - s)], &new[s..e], "block {i}");
            }
        }
        // The 15 copied blocks and both zero blocks (one zero block in old serves both).
        assert!(
            found[..17].iter().all(Option::is_some),
            "{:?}",
            &found[..17]
        );
    }

    #[test]
    fn filter_has_no_false_negatives() {
        let ds: Vec<u32> = (0..5000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let f = WeakFilter::new(ds.iter().copied(), ds.len());
        assert!(ds.iter().all(|&d| f.may_contain(d)));
        let false_pos = (0..100_000u32)
            .filter(|&d| f.may_contain(d ^ 0x5555_5555))
            .count();
        assert!(false_pos < 5_000, "{false_pos} false positives in 100k");
    }

    #[test]
    fn many_missing_ranges_go_in_par_groups() {
        // Every other block changed: hundreds of separate missing ranges (gap 0).
        let old = noise(800 * BLOCK, 21);
        let mut new = old.clone();
        for b in (0..800).step_by(2) {
            new[b * BLOCK + 7] ^= 0xff;
        }
        let sig = Signature::parse(&signature(&new[..]).unwrap()).unwrap();
        let calls = std::sync::Mutex::new(Vec::new());
        let (out, fetched) = sig
            .patch(&old, 0, 4, |r| {
                calls.lock().unwrap().push(r.len());
                Ok(r.iter()
                    .map(|&(s, e)| new[s as usize..e as usize].to_vec())
                    .collect())
            })
            .unwrap();
        assert_eq!(out, new);
        assert_eq!(fetched, 400 * BLOCK as u64);
        let calls = calls.into_inner().unwrap();
        // 400 ranges, 4 fetchers: groups of at most 64 ranges, at least 4 groups.
        assert_eq!(calls.iter().sum::<usize>(), 400);
        assert!(
            calls.len() >= 4 && calls.iter().all(|&n| n <= 64),
            "{calls:?}"
        );
    }

    #[test]
    fn bad_signatures_are_refused() {
        assert!(Signature::parse(b"nope").is_err());
        let mut s = signature(&noise(10_000, 5)[..]).unwrap();
        s.pop();
        assert!(Signature::parse(&s).is_err());
    }
}
