//! A person's own password, over HTTP on both backends: changed with the current
//! one, refused when short, easy to guess or mistyped; once changed, the old one
//! no longer signs in and every other session of theirs ends at its next request.

use quoteline::kernel::Role;

use crate::support::{TestApp, TestDb, assert_is_redirect_to, html_page};

storage_tests!(
    a_person_changes_their_password_and_every_other_session_of_theirs_ends,
    a_new_password_must_be_long_hard_to_guess_and_typed_twice,
);

const NEW: &str = "violet tractor harbour 42";

async fn change(app: &TestApp, current: &str, new: &str, again: &str) -> reqwest::Response {
    app.post_form(
        "/account/password",
        &[
            ("current_password", current),
            ("new_password", new),
            ("confirm_password", again),
        ],
    )
    .await
}

async fn a_person_changes_their_password_and_every_other_session_of_theirs_ends(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let password = app.add_user("asha", &[Role::Agent]).await;
    assert_eq!(app.sign_in("asha", &password).await.status().as_u16(), 303);
    let elsewhere = app.new_browser();
    assert_eq!(
        elsewhere.sign_in("asha", &password).await.status().as_u16(),
        303
    );
    html_page(elsewhere.get("/quotes").await, 200).await;

    // Every page offers it; the form asks for the current password first.
    let page = html_page(app.get("/quotes").await, 200).await;
    assert!(
        page.contains(r#"<a href="/account/password">Change password</a>"#),
        "{page}"
    );
    let form = html_page(app.get("/account/password").await, 200).await;
    assert!(
        form.contains(r#"autocomplete="current-password""#),
        "{form}"
    );

    let wrong = html_page(change(&app, "not-my-password", NEW, NEW).await, 422).await;
    assert!(
        wrong.contains("Your current password is not right"),
        "{wrong}"
    );
    assert!(
        !wrong.contains(NEW),
        "a password is never drawn back into the form"
    );
    html_page(elsewhere.get("/quotes").await, 200).await;

    let changed = change(&app, &password, NEW, NEW).await;
    assert_is_redirect_to(&changed, "/account/password/changed");
    let done = html_page(app.get("/account/password/changed").await, 200).await;
    assert!(
        done.contains("Every other session of yours has ended"),
        "{done}"
    );

    // This session goes on; the other one is over at its next request.
    html_page(app.get("/quotes").await, 200).await;
    assert_is_redirect_to(&elsewhere.get("/quotes").await, "/login");
    assert_is_redirect_to(&elsewhere.get("/quotes").await, "/login");

    // The old password no longer signs in; the new one does, and that session is new.
    let another = app.new_browser();
    assert_eq!(
        another.sign_in("asha", &password).await.status().as_u16(),
        401
    );
    assert_eq!(another.sign_in("asha", NEW).await.status().as_u16(), 303);
    html_page(another.get("/quotes").await, 200).await;
    html_page(app.get("/quotes").await, 200).await;
}

async fn a_new_password_must_be_long_hard_to_guess_and_typed_twice(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    assert_is_redirect_to(&app.get("/account/password").await, "/login");
    let password = app.add_user("uma", &[Role::Underwriter]).await;
    app.sign_in("uma", &password).await;

    for (current, new, again, field, says) in [
        (
            "",
            NEW,
            NEW,
            "current_password",
            "Enter your current password",
        ),
        (
            password.as_str(),
            "",
            "",
            "new_password",
            "Enter a new password",
        ),
        (
            password.as_str(),
            "Ab3$x",
            "Ab3$x",
            "new_password",
            "Use at least 8 characters",
        ),
        (
            password.as_str(),
            "password123",
            "password123",
            "new_password",
            "would be too easy to guess",
        ),
        (
            password.as_str(),
            "qwertyuiop",
            "qwertyuiop",
            "new_password",
            "would be too easy to guess",
        ),
        (
            password.as_str(),
            &password,
            &password,
            "new_password",
            "not your current one",
        ),
        (
            password.as_str(),
            NEW,
            "violet tractor harbour 43",
            "confirm_password",
            "Enter the same new password again",
        ),
    ] {
        let body = html_page(change(&app, current, new, again).await, 422).await;
        assert!(body.contains(says), "{new:?}: {body}");
        assert!(
            body.contains(&format!(r##"href="#{field}""##)),
            "{new:?}: {body}"
        );
    }
    // zxcvbn's advice is shown with the refusal.
    let body = html_page(
        change(&app, &password, "password123", "password123").await,
        422,
    )
    .await;
    let advice = body.split("would be too easy to guess").nth(1).unwrap();
    assert!(advice.starts_with(". ") && advice.len() > 40, "{body}");

    // Nothing changed: the password still signs in.
    let again = app.new_browser();
    assert_eq!(again.sign_in("uma", &password).await.status().as_u16(), 303);
}
