//! TensorBoard scalars: the event file TensorBoard reads
//! (`events.out.tfevents.*`), written from a run's epochs.
//!
//! The format is TFRecord framing around protobuf `Event` messages: each
//! record is its length (u64, little-endian), a masked CRC-32C of those 8
//! bytes, the message, and a masked CRC-32C of the message. The first event
//! names the format version (`brain.Event:2`); then one event per epoch
//! holds that epoch's scalars, its step being the epoch number. Only the
//! three messages and fields scalars need are declared (with `prost`);
//! TensorBoard's own `Event` has more, all optional.

use anyhow::{Result, bail};
use prost::Message;

use sasrec_model::EpochRecord;

/// The event file's name in a run folder: TensorBoard reads any file whose
/// name holds `tfevents`, so `tensorboard --logdir runs` shows every run.
pub const EVENTS_FILE: &str = "events.out.tfevents.sasrec";

/// The CRC TFRecord uses: CRC-32C (Castagnoli).
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// `tensorflow.Event`, the fields scalars use.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The x coordinate in TensorBoard (here the epoch).
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// Set in the first event only: `brain.Event:2`.
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    /// The scalars of this step.
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    /// One entry per scalar.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` holding a scalar.
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    /// The curve's name, e.g. `loss/train`.
    #[prost(string, tag = "1")]
    pub tag: String,
    /// The value.
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// The event file for `epochs`: train and validation loss, validation HR@K,
/// NDCG@K and MRR, and training speed, per epoch. The bytes depend only on
/// the records (their end times are the wall times), so the file of a
/// longer run extends the file of its first epochs.
pub fn events(epochs: &[EpochRecord]) -> Vec<u8> {
    let start = epochs.first().map_or(0.0, |r| r.ended_at - r.seconds);
    let mut out = Vec::new();
    let version = Event {
        wall_time: start,
        step: 0,
        file_version: Some("brain.Event:2".to_string()),
        summary: None,
    };
    write_record(&mut out, &version.encode_to_vec());
    for r in epochs {
        let mut scalars = vec![
            ("loss/train".to_string(), r.train_loss),
            ("loss/valid".to_string(), r.valid.loss),
        ];
        if let Some(m) = &r.valid.ranking {
            for at in &m.at {
                scalars.push((format!("valid/HR@{}", at.k), at.hr));
                scalars.push((format!("valid/NDCG@{}", at.k), at.ndcg));
            }
            scalars.push(("valid/MRR".to_string(), m.mrr));
        }
        scalars.push(("speed/tokens_per_s".to_string(), r.tokens_per_s));
        let event = Event {
            wall_time: r.ended_at,
            step: r.epoch as i64,
            file_version: None,
            summary: Some(Summary {
                value: scalars
                    .into_iter()
                    .map(|(tag, v)| SummaryValue {
                        tag,
                        simple_value: Some(v as f32),
                    })
                    .collect(),
            }),
        };
        write_record(&mut out, &event.encode_to_vec());
    }
    out
}

/// Reads an event file back, checking every record's length and CRCs.
pub fn read_events(bytes: &[u8]) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let at = bytes.len() - rest.len();
        if rest.len() < 12 {
            bail!("record at byte {at}: truncated header");
        }
        let (header, tail) = rest.split_at(8);
        let (header_crc, tail) = tail.split_at(4);
        if u32::from_le_bytes(header_crc.try_into().expect("4 bytes")) != masked_crc(header) {
            bail!("record at byte {at}: the length's CRC does not match");
        }
        let len = u64::from_le_bytes(header.try_into().expect("8 bytes"));
        if (tail.len() as u64) < len.saturating_add(4) {
            bail!("record at byte {at}: truncated ({len} bytes announced)");
        }
        let (data, tail) = tail.split_at(len as usize);
        let (data_crc, tail) = tail.split_at(4);
        if u32::from_le_bytes(data_crc.try_into().expect("4 bytes")) != masked_crc(data) {
            bail!("record at byte {at}: the data's CRC does not match");
        }
        events.push(Event::decode(data)?);
        rest = tail;
    }
    Ok(events)
}

fn write_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// TFRecord's masked CRC: the CRC-32C rotated right by 15 bits plus a
/// constant (so that CRCs of data holding CRCs stay well distributed).
fn masked_crc(bytes: &[u8]) -> u32 {
    CRC32C
        .checksum(bytes)
        .rotate_right(15)
        .wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sasrec_model::Evaluation;
    use sasrec_model::metrics::RankingAccumulator;

    fn record(epoch: usize) -> EpochRecord {
        let mut acc = RankingAccumulator::new(&[10]);
        acc.add(epoch);
        EpochRecord {
            epoch,
            step: 5 * epoch as u64,
            train_loss: 9.0 - epoch as f64,
            valid: Evaluation {
                loss: 9.5 - epoch as f64,
                targets: 10,
                ranking: Some(acc.finish()),
            },
            tokens_per_s: 1000.0,
            seconds: 2.0,
            valid_seconds: 1.0,
            ended_at: 1_700_000_000.0 + 3.0 * epoch as f64,
            best: true,
        }
    }

    #[test]
    fn crc32c_is_castagnoli() {
        // The check value of CRC-32C, and TFRecord's masking of it.
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
        assert_eq!(
            masked_crc(b"123456789"),
            0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8)
        );
    }

    #[test]
    fn events_round_trip_and_grow_by_appending() {
        let records: Vec<EpochRecord> = (1..=3).map(record).collect();
        let bytes = events(&records);
        let read = read_events(&bytes).unwrap();
        assert_eq!(read.len(), 4);
        assert_eq!(read[0].file_version.as_deref(), Some("brain.Event:2"));
        let second = &read[2];
        assert_eq!(second.step, 2);
        assert_eq!(second.wall_time, 1_700_000_006.0);
        let tags: Vec<(&str, f32)> = second
            .summary
            .as_ref()
            .unwrap()
            .value
            .iter()
            .map(|v| (v.tag.as_str(), v.simple_value.unwrap()))
            .collect();
        assert_eq!(&tags[..2], [("loss/train", 7.0), ("loss/valid", 7.5)]);
        assert!(tags.iter().any(|(t, _)| *t == "valid/NDCG@10"));
        // Two epochs' file is a prefix of three epochs' file.
        assert!(bytes.starts_with(&events(&records[..2])));

        let mut torn = bytes.clone();
        torn.pop();
        assert!(
            read_events(&torn)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        let mut flipped = bytes;
        let last = flipped.len() - 6;
        flipped[last] ^= 1;
        assert!(
            read_events(&flipped)
                .unwrap_err()
                .to_string()
                .contains("CRC")
        );
    }
}
