//! The status page in a real headless browser.
