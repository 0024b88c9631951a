// The console's only script: copy buttons, and on a phone the current page's entry
// scrolled into the sideways navigation. Without JavaScript the copy buttons stay hidden
// and the read-only field beside each can be selected and copied by hand.
document.querySelectorAll("button[data-copy]").forEach(function (button) {
  button.hidden = false;
  button.addEventListener("click", function () {
    var field = document.getElementById(button.dataset.copy);
    if (!field) return;
    field.focus();
    field.select();
    var copied = function () {
      button.textContent = button.dataset.copied;
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(copied, function () {
        if (document.execCommand("copy")) copied();
      });
    } else if (document.execCommand("copy")) {
      copied();
    }
  });
});

// The navigation scrolls sideways on a narrow screen: keep the current entry in view
// (only the navigation moves, never the page).
var nav = document.querySelector("header.top nav");
var current = nav && nav.querySelector("a[aria-current=page]");
if (nav && current && nav.scrollWidth > nav.clientWidth) {
  nav.scrollLeft = current.offsetLeft - (nav.clientWidth - current.offsetWidth) / 2;
}
