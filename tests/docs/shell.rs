//! The shell blocks of the docs as commands, and their stated output as lines to match:
//! the parsing and matching rules of the convention `tests/docs.rs` describes.

/// One command of a `sh` block: a line with its continuation lines and here-documents.
#[derive(Debug, PartialEq)]
pub struct Cmd {
    pub text: String,
    /// Started with a trailing `&`.
    pub background: bool,
    /// The exit status it must have (`# exits N`; 0 otherwise).
    pub status: i32,
    /// The stated output, a line each.
    pub expected: Vec<String>,
}

/// Where the comment of a shell line starts: a `#` outside quotes, at the start or after
/// white space.
pub fn comment_start(line: &str) -> Option<usize> {
    let (mut single, mut double, mut prev) = (false, false, ' ');
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return Some(i),
            _ => {}
        }
        prev = c;
    }
    None
}

/// A line without its comment, and the comment.
pub fn split_comment(line: &str) -> (&str, &str) {
    match comment_start(line) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    }
}

/// The word that ends a here-document that `code` opens (`<<'YAML'`, `<<EOF`, `<<-X`).
pub fn heredoc_end(code: &str) -> Option<String> {
    let at = code.find("<<")?;
    let rest = code[at + 2..].strip_prefix('-').unwrap_or(&code[at + 2..]);
    if rest.starts_with('<') {
        return None; // a here-string
    }
    let word: String = rest
        .trim_start()
        .trim_start_matches(['\'', '"'])
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty()).then_some(word)
}

/// The exit status a trailing comment states (`… exits 1 …`).
pub fn stated_status(comment: &str) -> Option<i32> {
    let at = comment.find("exits ")?;
    let digits: String = comment[at + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The commands of a `sh` block.
pub fn commands(text: &str) -> Vec<Cmd> {
    let mut out: Vec<Cmd> = Vec::new();
    let mut lines = text.lines();
    // Whether a full-line comment here is the stated output of the last command.
    let mut attached = false;
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            attached = false;
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            if let (true, Some(cmd)) = (attached, out.last_mut()) {
                let content = comment.trim();
                match cmd.expected.last_mut() {
                    Some(last) if last.ends_with(',') => last.push_str(content),
                    _ => cmd.expected.push(content.to_owned()),
                }
            }
            continue;
        }
        let mut text = line.to_owned();
        let mut code_lines = vec![line];
        let mut last = line;
        loop {
            let (code, _) = split_comment(last);
            if let Some(end) = heredoc_end(code) {
                for body in lines.by_ref() {
                    text.push('\n');
                    text.push_str(body);
                    if body.trim() == end {
                        break;
                    }
                }
                break;
            }
            if !code.trim_end().ends_with('\\') {
                break;
            }
            let Some(next) = lines.next() else { break };
            text.push('\n');
            text.push_str(next);
            code_lines.push(next);
            last = next;
        }
        let (last_code, _) = split_comment(last);
        let last_code = last_code.trim_end();
        let status = code_lines
            .iter()
            .find_map(|l| stated_status(split_comment(l).1))
            .unwrap_or(0);
        out.push(Cmd {
            text,
            background: last_code.ends_with('&') && !last_code.ends_with("&&"),
            status,
            expected: Vec::new(),
        });
        attached = true;
    }
    out
}

/// White space runs as one space, ends trimmed.
pub fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether an actual output line matches a stated one: the stated line's pieces between
/// wildcards (`…`, `...`) appear in it in order.
pub fn line_matches(expected: &str, actual: &str) -> bool {
    let expected = squeeze(expected);
    let expected = match expected.find(" <- ") {
        Some(i) => &expected[..i],
        None => expected.as_str(),
    };
    let actual = squeeze(actual);
    let mut at = 0;
    for piece in expected.split(['…']).flat_map(|p| p.split("...")) {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        match actual[at..].find(piece) {
            Some(i) => at += i + piece.len(),
            None => return false,
        }
    }
    true
}

/// The first stated line that the output does not show, in order.
pub fn first_unmatched<'a>(expected: &'a [String], output: &str) -> Option<&'a str> {
    let mut lines = output.lines();
    expected
        .iter()
        .find(|want| !lines.any(|line| line_matches(want, line)))
        .map(String::as_str)
}

/// Why a command's stated output cannot be compared, if it cannot: output stated under a
/// background command (its output is the shell's, not the command's), or a stated line that
/// would match anything.
pub fn uncomparable(cmd: &Cmd) -> Option<String> {
    if cmd.background && !cmd.expected.is_empty() {
        return Some(
            "output stated under a background command cannot be compared; state it under a command that prints it"
                .to_owned(),
        );
    }
    cmd.expected
        .iter()
        .find(|e| {
            let e = squeeze(e);
            let e = e.split(" <- ").next().unwrap_or_default();
            e.replace(['…'], "").replace("...", "").trim().is_empty()
        })
        .map(|e| format!("the stated line `{e}` matches anything"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_block_splits_into_commands_with_their_stated_output() {
        let block = "\
    # prose before the first command
    mkdir -p d && cat > d/c.yaml <<'YAML'
    a: 1   # not a comment of the shell
    YAML
    server --flag &   # the server
    curl -i http://x/ \\
      -d '{\"a\": \"#1\"}'
    # HTTP/1.1 202 Accepted   <- a note
    # {\"a\":1,
    #  \"b\":2}
    #   indented

    # prose after a blank line
    tool check   # exits 1
    ";
        let cmds = commands(block);
        assert_eq!(cmds.len(), 4, "{cmds:?}");
        assert!(cmds[0].text.ends_with("YAML") && cmds[0].expected.is_empty());
        assert!(cmds[1].background);
        assert_eq!(
            cmds[2].expected,
            [
                "HTTP/1.1 202 Accepted   <- a note",
                "{\"a\":1,\"b\":2}",
                "indented"
            ]
        );
        assert!(!cmds[2].background && cmds[2].text.contains("#1"));
        assert_eq!((cmds[3].status, cmds[3].expected.len()), (1, 0));
    }

    #[test]
    fn stated_output_tolerates_ids_times_and_spacing() {
        let out = "HTTP/1.1 202 Accepted\n0  2026-11-28T21:40:09.07Z  com.example.a  id=18ec-0\n";
        let want = |lines: &[&str]| lines.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            first_unmatched(&want(&["HTTP/1.1 202 Accepted  <- stored"]), out),
            None
        );
        assert_eq!(
            first_unmatched(&want(&["0 … com.example.a id=…"]), out),
            None
        );
        assert_eq!(
            first_unmatched(&want(&["HTTP/1.1 400 Bad Request"]), out),
            Some("HTTP/1.1 400 Bad Request")
        );
        // In order: a line matched once cannot match the next stated line.
        assert_eq!(
            first_unmatched(&want(&["0 …", "HTTP/1.1 202 …"]), out),
            Some("HTTP/1.1 202 …")
        );
    }

    #[test]
    fn stated_output_that_cannot_be_compared_is_refused() {
        let background = commands("server &\n# listening\n");
        assert!(uncomparable(&background[0]).is_some());
        let anything = commands("tool\n# …\n");
        assert!(uncomparable(&anything[0]).is_some());
        let fine = commands("tool\n# ok …\n");
        assert_eq!(uncomparable(&fine[0]), None);
    }
}
