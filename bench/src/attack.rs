//! Hostile clients for the soak test: many connections that send garbage,
//! truncated frames, oversized length fields, or one byte per second, and
//! reconnect when the server closes them. Bounded in count and time; aimed
//! only at the address given (loopback in every documented use).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[derive(Debug, Default, Clone, Copy)]
pub struct AttackStats {
    pub connections_opened: u64,
    pub bytes_sent: u64,
}

/// The four behaviours, spread evenly over `connections`.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Garbage,
    Truncated,
    Oversized,
    Slow,
}

pub fn run(address: SocketAddr, connections: usize, duration: Duration) -> std::io::Result<AttackStats> {
    if let Err(error) = crate::sys::raise_nofile() {
        eprintln!(
            "latchkey-bench: cannot raise the open-files limit ({error}); it stays {}",
            crate::sys::nofile_limit()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let end = Instant::now() + duration;
    runtime.block_on(async move {
        let behaviours = [Behaviour::Garbage, Behaviour::Truncated, Behaviour::Oversized, Behaviour::Slow];
        let tasks: Vec<_> = (0..connections)
            .map(|index| tokio::spawn(attacker(address, behaviours[index % 4], end, index as u64)))
            .collect();
        let mut total = AttackStats::default();
        for task in tasks {
            let stats = task.await.map_err(std::io::Error::other)?;
            total.connections_opened += stats.connections_opened;
            total.bytes_sent += stats.bytes_sent;
        }
        Ok(total)
    })
}

async fn attacker(address: SocketAddr, behaviour: Behaviour, end: Instant, seed: u64) -> AttackStats {
    let mut stats = AttackStats::default();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    while Instant::now() < end {
        let Ok(mut stream) = TcpStream::connect(address).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        stats.connections_opened += 1;
        let result: std::io::Result<()> = async {
            match behaviour {
                Behaviour::Garbage => {
                    // Random bytes, as fast as the server takes them.
                    let mut chunk = vec![0u8; 512];
                    while Instant::now() < end {
                        for byte in chunk.iter_mut() {
                            *byte = random() as u8;
                        }
                        stream.write_all(&chunk).await?;
                        stats.bytes_sent += chunk.len() as u64;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Behaviour::Truncated => {
                    // A login frame cut short, then silence until closed.
                    let frame = [40u8, 0, 0, 0, 44, 0, 0, 0, 52, b'l', b'k', b'_'];
                    stream.write_all(&frame).await?;
                    stats.bytes_sent += frame.len() as u64;
                    let mut sink = [0u8; 64];
                    let _ = tokio::time::timeout_at(
                        end.into(),
                        tokio::io::AsyncReadExt::read(&mut stream, &mut sink),
                    )
                    .await;
                }
                Behaviour::Oversized => {
                    // A length field far over any limit, then a flood of payload.
                    stream.write_all(&[0xff, 0xff, 0xff, 0x7f, 42, 0, 0, 0]).await?;
                    stats.bytes_sent += 8;
                    let chunk = vec![0x41u8; 64 * 1024];
                    while Instant::now() < end {
                        stream.write_all(&chunk).await?;
                        stats.bytes_sent += chunk.len() as u64;
                    }
                }
                Behaviour::Slow => {
                    // One byte per second of an otherwise valid Ping.
                    for byte in [4u8, 0, 0, 0, 1, 0, 0, 0].into_iter().cycle() {
                        if Instant::now() >= end {
                            break;
                        }
                        stream.write_all(&[byte]).await?;
                        stats.bytes_sent += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            // Closed by the server: reconnect after a short pause.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stats
}
