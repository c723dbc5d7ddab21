//! Bounded user input: a line typed into an interactive chat (or a prompt flag) is checked
//! against a byte limit **before** it is kept, tokenized or rendered, so that an 80 MB line
//! costs at most the limit in memory and ends in [`Error::InputTooLong`].

use crate::{Error, Result};
use std::io::BufRead;

/// Bytes of input allowed for a context of `context_tokens` tokens: 16 bytes per token, four
/// times what text takes on average with the zoo's tokenizers, so a longer input cannot fit
/// in the context anyway.
///
/// ```
/// assert_eq!(mlx_models::text::input::input_limit(32_768), 524_288);
/// ```
pub fn input_limit(context_tokens: usize) -> usize {
    context_tokens.saturating_mul(16)
}

/// Checks `text` against `limit` bytes.
///
/// ```
/// use mlx_models::text::input::check_input;
/// assert!(check_input("hello", 5).is_ok());
/// assert!(matches!(
///     check_input("hello!", 5),
///     Err(mlx_models::Error::InputTooLong { length: 6, limit: 5 })
/// ));
/// ```
pub fn check_input(text: &str, limit: usize) -> Result<()> {
    if text.len() > limit {
        return Err(Error::InputTooLong {
            length: text.len() as u64,
            limit: limit as u64,
        });
    }
    Ok(())
}

/// Reads one line of at most `limit` bytes (without its `\n` / `\r\n`); `Ok(None)` at the end
/// of input. A longer line is read to its end without being kept (memory stays at `limit`)
/// and is [`Error::InputTooLong`] with its full length, so the caller can report it and read
/// the next line. Invalid UTF-8 is [`Error::InvalidArgument`].
///
/// ```
/// use mlx_models::text::input::read_line_bounded;
/// let mut input = std::io::Cursor::new("short\nthis one is too long\nok\n");
/// assert_eq!(read_line_bounded(&mut input, 8)?, Some("short".to_string()));
/// assert!(read_line_bounded(&mut input, 8).is_err());
/// assert_eq!(read_line_bounded(&mut input, 8)?, Some("ok".to_string()));
/// assert_eq!(read_line_bounded(&mut input, 8)?, None);
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn read_line_bounded(reader: &mut impl BufRead, limit: usize) -> Result<Option<String>> {
    let mut line = Vec::new();
    let mut length: u64 = 0;
    let mut any = false;
    loop {
        let chunk = reader
            .fill_buf()
            .map_err(|e| Error::InvalidArgument(format!("reading input: {e}")))?;
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], true),
            None => (chunk, false),
        };
        length += part.len() as u64;
        // One byte of slack for a `\r` before the newline.
        if length <= limit as u64 + 1 {
            line.extend_from_slice(part);
        }
        let used = part.len() + usize::from(done);
        reader.consume(used);
        if done {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
        length -= 1;
    }
    if length > limit as u64 {
        return Err(Error::InputTooLong {
            length,
            limit: limit as u64,
        });
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| Error::InvalidArgument("input is not valid UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that yields `n` bytes of `x` then a newline, in small chunks, without ever
    /// holding the line.
    struct Endless {
        left: u64,
        buf: [u8; 4096],
        newline_sent: bool,
    }

    impl std::io::Read for Endless {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            unreachable!("read through BufRead")
        }
    }

    impl BufRead for Endless {
        fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
            if self.left > 0 {
                let n = self.left.min(4096) as usize;
                return Ok(&self.buf[..n]);
            }
            Ok(if self.newline_sent { &[] } else { b"\n" })
        }
        fn consume(&mut self, amt: usize) {
            if self.left > 0 {
                self.left -= amt as u64;
            } else if amt > 0 {
                self.newline_sent = true;
            }
        }
    }

    #[test]
    fn an_80_mb_line_is_refused_with_its_length() {
        let mut r = Endless {
            left: 80 << 20,
            buf: [b'x'; 4096],
            newline_sent: false,
        };
        match read_line_bounded(&mut r, 1 << 20) {
            Err(Error::InputTooLong { length, limit }) => {
                assert_eq!((length, limit), (80 << 20, 1 << 20))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(read_line_bounded(&mut r, 1 << 20).unwrap(), None);
    }

    #[test]
    fn crlf_and_last_line_without_newline() {
        let mut input = std::io::Cursor::new("a\r\nb");
        assert_eq!(
            read_line_bounded(&mut input, 1).unwrap().as_deref(),
            Some("a")
        );
        assert_eq!(
            read_line_bounded(&mut input, 1).unwrap().as_deref(),
            Some("b")
        );
        assert_eq!(read_line_bounded(&mut input, 1).unwrap(), None);
        let mut bad = std::io::Cursor::new(vec![0xff, b'\n']);
        assert!(matches!(
            read_line_bounded(&mut bad, 10),
            Err(Error::InvalidArgument(_))
        ));
    }
}
