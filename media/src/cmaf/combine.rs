//! Joins single-track init segments into one multi-track init segment, so a
//! player or a file can carry all of a broadcast's tracks (`strom watch`).

use bytes::Bytes;
use mp4_atom::{Decode, Encode, Ftyp, Moov};

use super::CmafError;

/// One ftyp + moov holding every trak (and trex) of `inits`, in order.
/// Track ids must differ, as strom's do (video 1, audio 2).
pub fn combine_init(inits: &[Bytes]) -> Result<Bytes, CmafError> {
    let mut ftyp: Option<Ftyp> = None;
    let mut combined: Option<Moov> = None;
    for init in inits {
        let mut buf: &[u8] = init;
        let this_ftyp = Ftyp::decode(&mut buf)?;
        let moov = Moov::decode(&mut buf)?;
        ftyp.get_or_insert(this_ftyp);
        match combined.as_mut() {
            None => combined = Some(moov),
            Some(all) => {
                if moov
                    .trak
                    .iter()
                    .any(|t| all.trak.iter().any(|a| a.tkhd.track_id == t.tkhd.track_id))
                {
                    return Err(CmafError::Layout("two init segments share a track id"));
                }
                all.trak.extend(moov.trak);
                if let (Some(mvex), Some(more)) = (all.mvex.as_mut(), moov.mvex) {
                    mvex.trex.extend(more.trex);
                }
                all.mvhd.next_track_id = all.mvhd.next_track_id.max(moov.mvhd.next_track_id);
            }
        }
    }
    let (ftyp, moov) = match (ftyp, combined) {
        (Some(f), Some(m)) => (f, m),
        _ => return Err(CmafError::MissingBox("moov")),
    };
    let mut out = Vec::new();
    ftyp.encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(Bytes::from(out))
}
