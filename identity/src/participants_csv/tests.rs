//! Tests for participant CSV import and export.

use super::*;
use proptest::prelude::*;

fn form() -> Vec<FormField> {
    vec![
        FormField {
            name: "company".into(),
            label: "Firma".into(),
            kind: FieldKind::Text,
            required: true,
        },
        FormField {
            name: "track".into(),
            label: "Track".into(),
            kind: FieldKind::Select(vec!["Vertrieb".into(), "Technik".into()]),
            required: false,
        },
        FormField {
            name: "newsletter".into(),
            label: "Newsletter".into(),
            kind: FieldKind::Checkbox,
            required: false,
        },
        FormField {
            name: "deputy".into(),
            label: "Vertretung".into(),
            kind: FieldKind::Email,
            required: false,
        },
    ]
}

fn messages(report: &ImportReport) -> Vec<(u64, Option<&str>, &str)> {
    report
        .errors
        .iter()
        .map(|e| (e.line, e.column.as_deref(), e.message.as_str()))
        .collect()
}

#[test]
fn clean_import_normalises_values() {
    let csv = "email,name,company,track,newsletter,deputy,password\n\
               Anna.Schmidt@Example.DE , Anna Schmidt ,ACME GmbH,technik,Yes,,\n\
               bob@example.org,Bob,Initech,,0,Vertretung@Example.org,Sehr-geheim-42\n";
    let report = import(csv.as_bytes(), &form());
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(report.rows.len(), 2);
    let anna = &report.rows[0];
    assert_eq!(
        (anna.line, anna.email.as_str(), anna.name.as_str()),
        (2, "anna.schmidt@example.de", "Anna Schmidt")
    );
    assert_eq!(
        anna.fields.get("track").map(String::as_str),
        Some("Technik")
    );
    assert_eq!(
        anna.fields.get("newsletter").map(String::as_str),
        Some("true")
    );
    assert!(!anna.fields.contains_key("deputy"));
    assert_eq!(anna.password, None);
    let bob = &report.rows[1];
    assert_eq!(
        bob.fields.get("newsletter").map(String::as_str),
        Some("false")
    );
    assert_eq!(
        bob.fields.get("deputy").map(String::as_str),
        Some("vertretung@example.org")
    );
    assert_eq!(bob.password.as_deref(), Some("Sehr-geheim-42"));
    let preview = serde_json::to_string(&report).unwrap();
    assert!(
        !preview.contains("Sehr-geheim-42") && !preview.contains("password"),
        "{preview}"
    );
}

#[test]
fn bom_crlf_quoted_newlines_and_semicolons() {
    let csv = "\u{FEFF}email;name;company\r\n\"a@example.de\";\"Müller; Jörg\";\"Zeile 1\r\nZeile 2\"\r\nb@example.de;Bea;X\r\n";
    let report = import(csv.as_bytes(), &form());
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(report.rows[0].name, "Müller; Jörg");
    assert_eq!(report.rows[0].fields["company"], "Zeile 1\nZeile 2");
    // The quoted newline makes the second record start on line 4.
    assert_eq!((report.rows[0].line, report.rows[1].line), (2, 4));
}

#[test]
fn line_numbers_match_an_editor_with_crlf_and_quoted_newlines() {
    let csv = "email,name,company\r\n\r\nbad,A,\"x\r\ny\"\r\nalso-bad,B,X\r\nc@example.de,C,X";
    let report = import(csv.as_bytes(), &form());
    assert_eq!(
        messages(&report),
        vec![
            (3, Some("email"), "not a valid e-mail address"),
            (5, Some("email"), "not a valid e-mail address")
        ]
    );
    assert_eq!(report.rows[0].line, 6);
}

#[test]
fn header_problems_stop_the_import() {
    let report = import(b"mail,name\nx@example.de,X\n", &form());
    assert!(!report.is_clean());
    assert!(report.rows.is_empty());
    let errors = messages(&report);
    assert!(
        errors.contains(&(1, Some("mail"), "header column 1 is not a form field")),
        "{errors:?}"
    );
    assert!(errors.contains(&(
        1,
        Some("email"),
        "required column is missing from the header"
    )));
    assert!(errors.contains(&(
        1,
        Some("company"),
        "required form field is missing from the header"
    )));

    let report = import(b"email,name,company,EMAIL\n", &form());
    assert_eq!(
        messages(&report),
        vec![(1, Some("email"), "column appears twice in the header")]
    );

    let report = import(b"Email,NAME,company\na@example.de,A,X\n", &form());
    assert!(report.is_clean(), "{:?}", report.errors);

    let report = import(b"", &form());
    assert_eq!(
        messages(&report),
        vec![(0, None, "file is empty; a header row is required")]
    );
}

#[test]
fn row_errors_do_not_abort_and_do_not_leak_values() {
    let csv = "email,name,company,track,newsletter\n\
               secret.person@example.de,Geheim Person,ACME,Technik,yes\n\
               not-an-email,Geheim Zwei,ACME,,\n\
               c@example.de,,ACME,,\n\
               d@example.de,Dora,,,\n\
               e@example.de,Emil,ACME,Marketing,\n\
               f@example.de,Fritz,ACME,,vielleicht\n\
               g@example.de,Gerd\n\
               SECRET.person@example.de,Doppelt,ACME,,\n\
               h@example.de,Hanna,ACME,,\n";
    let report = import(csv.as_bytes(), &form());
    assert!(!report.is_clean());
    assert_eq!(
        report.rows.iter().map(|r| r.line).collect::<Vec<_>>(),
        vec![2, 10],
        "valid rows around the bad ones are still checked"
    );
    assert_eq!(
        messages(&report),
        vec![
            (3, Some("email"), "not a valid e-mail address"),
            (4, Some("name"), "name is required"),
            (5, Some("company"), "required field is empty"),
            (6, Some("track"), "value is not one of the 2 options"),
            (
                7,
                Some("newsletter"),
                "checkbox must be true/false, yes/no or 1/0"
            ),
            (8, None, "row has 2 columns, the header has 5"),
            (9, Some("email"), "e-mail address already appears on line 2"),
        ]
    );
    let all = format!("{:?}", report.errors).to_lowercase();
    for personal in [
        "secret.person",
        "geheim",
        "not-an-email",
        "marketing",
        "vielleicht",
        "gerd",
        "doppelt",
    ] {
        assert!(!all.contains(personal), "error text leaks {personal}");
    }
}

#[test]
fn preset_passwords_can_be_checked_against_the_policy() {
    // The third row's password is made of its own name and address.
    let csv =
        "email,name,company,password\na@example.de,A,X,short\nb@example.de,B,X,Long-enough-42\n\
        carla.contoso@example.de,Carla Contoso,X,Carla-Contoso-2026\n";
    assert!(import(csv.as_bytes(), &form()).is_clean());
    let report = import_with_policy(csv.as_bytes(), &form(), &PasswordPolicy::default());
    assert_eq!(
        messages(&report),
        vec![
            (
                2,
                Some("password"),
                "password is shorter than 10 characters"
            ),
            (
                4,
                Some("password"),
                "password is one of the commonly used ones, or too easy to guess"
            )
        ]
    );
    assert_eq!(report.rows.len(), 1);
}

#[test]
fn invalid_utf8_cells_are_row_errors() {
    let mut csv = b"email,name,company\na@example.de,".to_vec();
    csv.extend_from_slice(b"\xFF\xFE,X\nb@example.de,B,X\n");
    let report = import(&csv, &form());
    assert_eq!(
        messages(&report),
        vec![(2, Some("name"), "cell is not valid UTF-8")]
    );
    assert_eq!(report.rows.len(), 1);
}

#[test]
fn size_and_row_limits() {
    let big = vec![b'a'; MAX_BYTES + 1];
    assert_eq!(
        messages(&import(&big, &form())),
        vec![(0, None, "file is larger than 10 MiB")]
    );

    let mut csv = String::from("email,name,company\n");
    for i in 0..=MAX_ROWS {
        csv.push_str(&format!("p{i}@example.de,P,X\n"));
    }
    assert!(csv.len() <= MAX_BYTES);
    let report = import(csv.as_bytes(), &form());
    assert_eq!(report.errors.len(), 1);
    assert_eq!(
        report.errors[0].message,
        "more than 100000 rows; split the file"
    );
    assert_eq!(report.errors[0].line, MAX_ROWS as u64 + 2);
    assert!(!report.is_clean());
}

#[test]
fn error_list_is_capped() {
    let mut csv = String::from("email,name,company\n");
    for _ in 0..(MAX_ERRORS + 50) {
        csv.push_str("bad,B,X\n");
    }
    let report = import(csv.as_bytes(), &form());
    assert_eq!(report.errors.len(), MAX_ERRORS + 1);
    assert_eq!(report.errors.last().map(|e| e.line), Some(0));
}

#[test]
fn email_validation() {
    for good in [
        "a@b.de",
        "first.last+tag@sub.example.co.uk",
        "x_y-z@xn--mller-kva.de",
        "ü@müller.de",
    ] {
        assert!(valid_email(good), "{good}");
    }
    for bad in [
        "", "a", "a@", "@b.de", "a@b", "a@@b.de", "a b@c.de", "a@b..de", ".a@b.de", "a.@b.de",
        "a@-b.de", "a@b.de\n", "<a@b.de>", "a@b_c.de",
    ] {
        assert!(!valid_email(bad), "{bad:?}");
    }
}

#[test]
fn formula_neutralisation() {
    for (cell, expected) in [
        ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
        ("+49 30 1234", "'+49 30 1234"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("harmless", "harmless"),
        ("a=b", "a=b"),
        ("", ""),
    ] {
        assert_eq!(neutralise_formula(cell), expected);
    }
    let rows = vec![ExportRow {
        email: "a@example.de".into(),
        name: "=cmd|' /C calc'!A0".into(),
        fields: BTreeMap::from([("company".into(), "@evil".into())]),
        status: "active".into(),
        created_at: "2025-01-01T00:00:00Z".into(),
    }];
    let text = String::from_utf8(export(&rows, &form())).unwrap();
    assert!(text.starts_with('\u{FEFF}'));
    assert!(text.contains(",'=cmd|' /C calc'!A0,"), "{text}");
    assert!(text.contains(",'@evil,"), "{text}");
    assert!(!text.contains(",=") && !text.contains(",@"), "{text}");
}

#[test]
fn export_header_and_round_trip() {
    let rows = vec![
        ExportRow {
            email: "anna@example.de".into(),
            name: "Anna \"Anni\" Schmidt, Dr.".into(),
            fields: BTreeMap::from([
                ("company".into(), "ACME\nBerlin".into()),
                ("track".into(), "Technik".into()),
                ("newsletter".into(), "true".into()),
            ]),
            status: "invited".into(),
            created_at: "2025-01-01T00:00:00Z".into(),
        },
        ExportRow {
            email: "bob@example.org".into(),
            name: "Bob".into(),
            fields: BTreeMap::from([
                ("company".into(), "Initech; Ltd".into()),
                ("deputy".into(), "d@example.org".into()),
            ]),
            status: "active".into(),
            created_at: "2025-02-01T00:00:00Z".into(),
        },
    ];
    let bytes = export(&rows, &form());
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        text.starts_with(
            "\u{FEFF}email,name,company,track,newsletter,deputy,status,created_at\r\n"
        ),
        "{text}"
    );
    let report = import(&bytes, &form());
    assert!(report.is_clean(), "{:?}", report.errors);
    let back: Vec<(String, String, BTreeMap<String, String>)> = report
        .rows
        .into_iter()
        .map(|r| (r.email, r.name, r.fields))
        .collect();
    let original: Vec<(String, String, BTreeMap<String, String>)> = rows
        .into_iter()
        .map(|r| (r.email, r.name, r.fields))
        .collect();
    assert_eq!(back, original);
}

#[test]
fn form_field_serde_shape() {
    let json = serde_json::to_string(&form()[1]).unwrap();
    assert_eq!(
        json,
        r#"{"name":"track","label":"Track","kind":{"select":["Vertrieb","Technik"]},"required":false}"#
    );
    let back: Vec<FormField> =
        serde_json::from_str(&serde_json::to_string(&form()).unwrap()).unwrap();
    assert_eq!(back, form());
}

fn cell() -> impl Strategy<Value = String> {
    // Non-formula text with the characters that need quoting: separators, quotes, newlines.
    "[A-Za-zÄÖÜäöüß0-9][A-Za-zÄÖÜäöüß0-9 ,;\"'\n]{0,12}[A-Za-z0-9]"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn import_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let report = import(&bytes, &form());
        // Whatever got through is normalised and in file order.
        for row in &report.rows {
            prop_assert!(valid_email(&row.email));
            prop_assert_eq!(row.email.to_lowercase(), row.email.clone());
            prop_assert!(!row.name.is_empty());
        }
        prop_assert!(report.rows.windows(2).all(|w| w[0].line < w[1].line));
    }

    #[test]
    fn import_never_panics_on_csv_like_text(text in "[a-z@.,;\"\r\n\u{FEFF}=ä ]{0,400}") {
        let header = format!("email,name,company,track,newsletter\n{text}");
        let _ = import(header.as_bytes(), &form());
        let _ = import(text.as_bytes(), &form());
    }

    #[test]
    fn export_import_round_trip(
        people in proptest::collection::vec(("[a-z]{1,8}", "[A-Za-zÄÖÜäöüß][A-Za-zÄÖÜäöüß ,;\"']{0,12}[a-z]", cell(), any::<bool>()), 1..20)
    ) {
        let rows: Vec<ExportRow> = people
            .iter()
            .enumerate()
            .map(|(i, (local, name, company, newsletter))| ExportRow {
                email: format!("{local}{i}@example.de"),
                name: name.clone(),
                fields: BTreeMap::from([
                    ("company".to_string(), company.clone()),
                    ("newsletter".to_string(), newsletter.to_string()),
                ]),
                status: "active".into(),
                created_at: "2025-01-01T00:00:00Z".into(),
            })
            .collect();
        let report = import(&export(&rows, &form()), &form());
        prop_assert!(report.is_clean(), "{:?}", report.errors);
        prop_assert_eq!(report.rows.len(), rows.len());
        for (got, want) in report.rows.iter().zip(&rows) {
            prop_assert_eq!(&got.email, &want.email);
            prop_assert_eq!(&got.name, &want.name);
            prop_assert_eq!(&got.fields, &want.fields);
        }
    }
}

#[test]
fn form_definitions_are_checked() {
    assert_eq!(check_form(&form()), Ok(()));
    let field = |name: &str, kind: FieldKind| FormField {
        name: name.into(),
        label: "L".into(),
        kind,
        required: false,
    };
    assert_eq!(
        check_form(&[field("", FieldKind::Text)]),
        Err(FormError::EmptyName { index: 0 })
    );
    assert_eq!(
        check_form(&[field(" a", FieldKind::Text)]),
        Err(FormError::EmptyName { index: 0 })
    );
    assert_eq!(
        check_form(&[
            field("E-Mail", FieldKind::Text),
            field("Email", FieldKind::Text)
        ]),
        Err(FormError::Reserved("Email".into()))
    );
    assert_eq!(
        check_form(&[field("a", FieldKind::Text), field("a", FieldKind::Checkbox)]),
        Err(FormError::Duplicate("a".into()))
    );
    assert_eq!(
        check_form(&[field("s", FieldKind::Select(vec![]))]),
        Err(FormError::NoOptions("s".into()))
    );
}

#[test]
fn an_import_checks_at_most_so_many_passwords() {
    let mut csv = String::from("email,name,company,password\n");
    for i in 0..=MAX_PASSWORD_ROWS {
        csv.push_str(&format!("p{i}@example.de,P,X,Pass-word-{i:05}x\n"));
    }
    let report = import_with_policy(csv.as_bytes(), &form(), &PasswordPolicy::default());
    assert!(!report.is_clean());
    let last = messages(&report).pop().unwrap();
    assert_eq!(last.0, MAX_PASSWORD_ROWS as u64 + 2);
    assert!(last.2.contains("rows with a password"), "{last:?}");
    // Without passwords the same number of rows is fine.
    let plain: String = std::iter::once("email,name,company\n".to_owned())
        .chain((0..=MAX_PASSWORD_ROWS).map(|i| format!("p{i}@example.de,P,X\n")))
        .collect();
    assert!(import(plain.as_bytes(), &form()).is_clean());
}
