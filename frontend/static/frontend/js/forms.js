// Small behaviours of server-rendered forms, declared with data attributes (the pages allow no
// inline handlers under the Content-Security-Policy):
//   <form data-confirm="Delete it?">   asks before submitting;
//   <select data-autosubmit>          submits its form when the choice changes.

document.addEventListener("submit", (event) => {
  const message = event.target.dataset?.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

document.addEventListener("change", (event) => {
  if (event.target.matches?.("select[data-autosubmit]")) event.target.form?.submit();
});
