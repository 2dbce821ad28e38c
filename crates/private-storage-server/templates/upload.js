// Progress bar for large uploads; without JavaScript the form posts normally.
const form = document.getElementById('upload-form');
form.addEventListener('submit', (event) => {
  if (!window.XMLHttpRequest || !window.FormData) return;
  event.preventDefault();
  const progress = document.getElementById('progress'), error = document.getElementById('upload-error');
  const xhr = new XMLHttpRequest();
  xhr.open('POST', '/api/files');
  xhr.setRequestHeader('X-CSRF-Token', form.elements.csrf.value);
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) { progress.hidden = false; progress.value = 100 * e.loaded / e.total; } };
  xhr.onload = () => {
    if (xhr.status === 201) { window.location = '/?uploaded=' + encodeURIComponent(JSON.parse(xhr.responseText).name); return; }
    let message = 'The upload failed.';
    try { message = JSON.parse(xhr.responseText).error || message; } catch (_) {}
    progress.hidden = true; error.textContent = message; error.hidden = false;
  };
  xhr.onerror = () => { progress.hidden = true; error.textContent = 'The upload was interrupted.'; error.hidden = false; };
  error.hidden = true;
  const notice = document.getElementById('notice');
  if (notice) notice.hidden = true;
  xhr.send(new FormData(form));
});
